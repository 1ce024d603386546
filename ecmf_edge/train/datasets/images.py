"""Face-image corpora laid out as one folder per label: FER2013, CK+48, or any such folder.

FER2013: ``<root>/<class>/Training_*.jpg`` (or PublicTest_*); classes angry, disgust, fear,
happy, neutral, sad, surprise. CK+48: ``<root>/<class>/Sxxx_yyy_zzzzzzzz.png``; classes
anger, contempt, disgust, fear, happy, sadness, surprise. Generic: ``<root>/<label>/*``
with an explicit label table. In-the-wild faces (``muxspace/facial_expressions``):
``<root>/images/<Person_Name>_0001.jpg`` (whole LFW photos, 350x350 grey; film faces, small colour
crops) labelled by ``<root>/data/legend.csv`` (``user.id, image, emotion``), grouped by person.
"""
from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from ecmf_edge.errors import InputError
from ecmf_edge.labels import map_label
from ecmf_edge.train.datasets.base import Sample, check_root

__all__ = ["read_label_folders", "read_fer2013", "read_ckplus", "read_faces_wild", "wild_person", "PHOTO_CORPORA"]

_IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp"}
_CK_SUBJECT = re.compile(r"^(S\d{3})_\d{3}_\d{8}\.png$")
# Corpora whose images are whole photos (the face is detected and aligned as the runtime does), not face crops.
PHOTO_CORPORA = ("faces_wild",)
# LFW "George_W_Bush_0012.jpg", film "HrithikRoshan_105.jpg": the person is the name before the number.
_WILD_PERSON = re.compile(r"^(.+?)_\d+$")


def read_label_folders(root: str | Path, dataset: str, corpus: str, *, name_pattern: str | None = None,
                       overrides: Mapping[str, str | None] | None = None, group_of=None) -> list[Sample]:
    """Images in ``<root>/<label>/``, labels mapped with the ``dataset`` table (plus overrides).

    Raises:
        InputError: the folder is missing or holds no label folders.
    """
    base = check_root(root, corpus, "<root>/<label>/<image files>")
    pattern = re.compile(name_pattern) if name_pattern else None
    out = []
    folders = [d for d in sorted(base.iterdir()) if d.is_dir()]
    if not folders:
        raise InputError(f"{base} holds no label folders: expected <root>/<label>/<image files>")
    for folder in folders:
        label = map_label(dataset, folder.name, overrides)
        if label is None:
            continue
        for path in sorted(folder.iterdir()):
            if path.suffix.lower() not in _IMAGE_SUFFIXES or (pattern and not pattern.match(path.name)):
                continue
            group = group_of(path) if group_of else f"{corpus}:{path.stem}"
            out.append(Sample(f"{corpus}:{folder.name}/{path.name}", corpus, group, label, folder.name, image=path))
    return out


def read_fer2013(root: str | Path, split: str = "train") -> list[Sample]:
    """FER2013 originals of one split folder (``train`` -> Training_*, ``publictest`` -> PublicTest_*).

    Augmented copies (``*.jpg0.jpg``) and PrivateTest images are never read.
    """
    prefix = {"train": "Training", "publictest": "PublicTest"}.get(split)
    if prefix is None:
        raise InputError(f"unknown FER2013 split '{split}': use train or publictest (PrivateTest is reserved)")
    return read_label_folders(Path(root) / split, "fer2013", "fer2013", name_pattern=rf"^{prefix}_\d+\.jpg$")


def read_ckplus(root: str | Path, exclude_subjects: set[str] = frozenset()) -> list[Sample]:
    """CK+48 images grouped by subject (Sxxx); ``exclude_subjects`` are never read."""
    def subject(path: Path) -> str:
        m = _CK_SUBJECT.match(path.name)
        return f"ckplus:{m.group(1) if m else path.stem}"

    samples = read_label_folders(root, "ckplus", "ckplus", name_pattern=r"^S\d{3}_\d{3}_\d{8}\.png$", group_of=subject)
    return [s for s in samples if s.group.split(":")[1] not in exclude_subjects]


def wild_person(name: str) -> str:
    """The person of an in-the-wild face file name (``George_W_Bush_0012.jpg`` -> ``George_W_Bush``)."""
    stem = Path(name).stem
    m = _WILD_PERSON.match(stem)
    return m.group(1) if m else stem


def read_faces_wild(root: str | Path, overrides: Mapping[str, str | None] | None = None) -> list[Sample]:
    """The labelled faces of ``muxspace/facial_expressions`` (``images/`` + ``data/legend.csv``), grouped by person.

    Labels are lower-cased (the csv mixes cases) and mapped with the ``faces_wild`` table (disgust and
    contempt dropped unless ``overrides`` keep them); an image listed twice keeps its first label; listed files that are missing are skipped.

    Raises:
        InputError: the folder or its legend is missing, or the legend lacks the columns.
    """
    import csv

    base = check_root(root, "faces_wild", "<root>/images/*.jpg and <root>/data/legend.csv")
    legend = base / "data" / "legend.csv"
    if not legend.is_file():
        raise InputError(f"{legend} is missing: faces_wild needs the repository's data/legend.csv next to images/")
    with legend.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if rows and not {"image", "emotion"} <= set(rows[0]):
        raise InputError(f"{legend} lacks the columns image, emotion: use the legend of muxspace/facial_expressions")
    out, seen = [], set()
    for row in rows:
        name, source = row["image"].strip(), row["emotion"].strip().lower()
        path = base / "images" / name
        if name in seen or not path.is_file():
            continue
        seen.add(name)
        label = map_label("faces_wild", source, overrides)
        if label is None:
            continue
        out.append(Sample(f"faces_wild:{name}", "faces_wild", f"faces_wild:{wild_person(name)}", label, source, image=path))
    return out

"""Corpora described by CSV files: MER2025 and a generic manifest.

MER2025 (MER2025-SEMI layout)::

    <root>/label-disdim.csv        name, discrete[, valence]   (discrete in the six MER labels)
    <root>/subtitle_chieng.csv     name, chinese, english      (optional)
    <root>/video/<name>.mp4        <root>/audio/<name>.wav     (either or both)

Generic manifest (one row per sample; paths relative to the CSV)::

    label, audio, video, image, text, group, id               (label and one medium required)
"""
from __future__ import annotations

import csv
from collections.abc import Mapping
from pathlib import Path

from ecmf_edge.errors import InputError
from ecmf_edge.labels import MER2025_LABELS, map_label
from ecmf_edge.train.datasets.base import Sample, check_root

__all__ = ["read_mer2025", "read_manifest"]


def _rows(path: Path, required: set[str]) -> list[dict[str, str]]:
    if not path.is_file():
        raise InputError(f"{path} not found")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        missing = required - set(reader.fieldnames or ())
        if missing:
            raise InputError(f"{path} lacks the column(s) {', '.join(sorted(missing))}")
        return [{k: (v or "").strip() for k, v in row.items() if k} for row in reader]


def _mer_label(value: str, overrides: Mapping[str, str | None] | None) -> str | None:
    label = value.strip().lower()
    if overrides and label in overrides:
        return overrides[label]
    if label not in MER2025_LABELS:
        raise InputError(f"label '{value}' is not one of the MER2025 labels ({', '.join(MER2025_LABELS)}): map it with overrides")
    return label


def read_mer2025(root: str | Path, labels_csv: str = "label-disdim.csv", subtitles_csv: str | None = "subtitle_chieng.csv",
                 text_column: str = "english") -> list[Sample]:
    """MER2025 samples with video, audio and subtitle text where present."""
    base = check_root(root, "MER2025", f"{labels_csv}, video/<name>.mp4, audio/<name>.wav, {subtitles_csv}")
    texts: dict[str, str] = {}
    if subtitles_csv and (base / subtitles_csv).is_file():
        texts = {r["name"]: r.get(text_column, "") for r in _rows(base / subtitles_csv, {"name", text_column})}
    out = []
    for row in _rows(base / labels_csv, {"name", "discrete"}):
        name = row["name"]
        label = _mer_label(row["discrete"], None)
        video, audio = base / "video" / f"{name}.mp4", base / "audio" / f"{name}.wav"
        text = texts.get(name) or None
        sample = Sample(f"mer2025:{name}", "mer2025", f"mer2025:{name}", label, row["discrete"],
                        audio=audio if audio.is_file() else None, video=video if video.is_file() else None, text=text)
        if sample.audio or sample.video or sample.text:
            out.append(sample)
    return out


def read_manifest(csv_path: str | Path, dataset: str | None = None, overrides: Mapping[str, str | None] | None = None,
                  corpus: str | None = None) -> list[Sample]:
    """Samples listed in a generic CSV; labels are MER labels or mapped with the ``dataset`` table.

    Raises:
        InputError: missing file or columns, a row without any medium, or an unknown label.
    """
    path = Path(csv_path)
    rows = _rows(path, {"label"})
    corpus = corpus or path.stem
    out = []
    for i, row in enumerate(rows):
        source = row["label"]
        label = map_label(dataset, source, overrides) if dataset else _mer_label(source, overrides)
        if label is None:
            continue
        media = {k: (path.parent / row[k]) for k in ("audio", "video", "image") if row.get(k)}
        for key, value in media.items():
            if not value.is_file():
                raise InputError(f"{path} row {i + 2}: {key} file {value} does not exist")
        if not media and not row.get("text"):
            raise InputError(f"{path} row {i + 2} has no audio, video, image or text")
        sample_id = row.get("id") or f"{i:06d}"
        out.append(Sample(f"{corpus}:{sample_id}", corpus, f"{corpus}:{row.get('group') or sample_id}", label, source,
                          text=row.get("text") or None, **media))
    return out

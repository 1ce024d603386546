"""Which corpora and subsets train and test the shipped models, and how they are split.

The subsets are fixed (see MODEL_CARD.md): RAVDESS actors 01-18, EmoDB speakers 03 08 09
10 11 12 13 14, FER2013 Training + PublicTest originals, CK+48 subjects outside the
reserved list, the in-the-wild faces of muxspace/facial_expressions, MELD train + dev. Everything else in those corpora is reserved for
independent evaluation and is never read. Test splits are person- or dialogue-independent:

* speech: held-out RAVDESS actors and EmoDB speakers (by a fixed list);
* face: FER2013 PublicTest (its own split), held-out CK+ subjects and held-out in-the-wild people;
* text: MELD dev (dialogues never seen in training).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ecmf_edge.train.datasets.base import Sample, group_split
from ecmf_edge.train.datasets.images import read_ckplus, read_faces_wild, read_fer2013
from ecmf_edge.train.datasets.meld import read_meld
from ecmf_edge.train.datasets.speech import read_emodb, read_ravdess

__all__ = ["CorpusPaths", "Split", "load_splits", "RAVDESS_ACTORS", "EMODB_SPEAKERS", "CKPLUS_RESERVED",
           "RAVDESS_TEST_ACTORS", "EMODB_TEST_SPEAKERS",
           "FACES_WILD_TEST_FRACTION", "faces_wild_split", "CORPORA_BY_MODALITY"]

RAVDESS_ACTORS = set(range(1, 19))
EMODB_SPEAKERS = {"03", "08", "09", "10", "11", "12", "13", "14"}
CKPLUS_RESERVED = frozenset("S011 S029 S042 S051 S056 S061 S066 S071 S076 S081 S086 S091 S096 S101 S108 S113 S119 "
                            "S127 S132 S137 S149 S157 S503 S999".split())
# Held-out people for the speaker-independent test split (2 women + 2 men of RAVDESS, 1+1 of EmoDB).
RAVDESS_TEST_ACTORS = ("ravdess:15", "ravdess:16", "ravdess:17", "ravdess:18")
EMODB_TEST_SPEAKERS = ("emodb:03", "emodb:14")
# Which corpora carry which modality's evidence (each of their samples has that one informative modality).
CORPORA_BY_MODALITY: dict[str, tuple[str, ...]] = {"face": ("fer2013", "ckplus", "faces_wild"),
                                                    "speech": ("ravdess", "emodb", "cremad"), "text": ("meld",)}
# Share of the in-the-wild people (whole people, by a fixed hash of the name) held out for testing.
FACES_WILD_TEST_FRACTION = 0.15


@dataclass(frozen=True)
class CorpusPaths:
    """Local folders of the corpora (None = not used)."""

    ravdess: Path | None = None
    emodb: Path | None = None
    fer2013: Path | None = None
    ckplus: Path | None = None
    meld: Path | None = None
    faces_wild: Path | None = None


@dataclass
class Split:
    """Train and test samples of one corpus."""

    train: list[Sample] = field(default_factory=list)
    test: list[Sample] = field(default_factory=list)


def load_splits(paths: CorpusPaths, ckplus_test_fraction: float = 0.2) -> dict[str, Split]:
    """Read each given corpus' subset and split it person/dialogue-independently."""
    out: dict[str, Split] = {}
    if paths.ravdess:
        samples = read_ravdess(paths.ravdess, actors=RAVDESS_ACTORS, audio_only=True)
        out["ravdess"] = Split(*group_split(samples, test_groups=RAVDESS_TEST_ACTORS))
    if paths.emodb:
        samples = read_emodb(paths.emodb, speakers=EMODB_SPEAKERS)
        out["emodb"] = Split(*group_split(samples, test_groups=EMODB_TEST_SPEAKERS))
    if paths.fer2013:
        out["fer2013"] = Split(read_fer2013(paths.fer2013, "train"), read_fer2013(paths.fer2013, "publictest"))
    if paths.ckplus:
        samples = read_ckplus(paths.ckplus, exclude_subjects=set(CKPLUS_RESERVED))
        out["ckplus"] = Split(*group_split(samples, test_fraction=ckplus_test_fraction, seed=0))
    if paths.faces_wild:
        out["faces_wild"] = Split(*faces_wild_split(read_faces_wild(paths.faces_wild)))
    if paths.meld:
        def as_samples(split: str) -> list[Sample]:
            return [Sample(f"meld:{split}:{u.dialogue_id}:{u.utterance_id}", "meld", f"meld:{split}:{u.dialogue_id}", u.label,
                           u.source_label, text=u.text, history=u.history) for u in read_meld(paths.meld, split)]

        out["meld"] = Split(as_samples("train"), as_samples("dev"))
    return out


def faces_wild_split(samples: list[Sample]) -> tuple[list[Sample], list[Sample]]:
    """(train, test) of the in-the-wild faces: :data:`FACES_WILD_TEST_FRACTION` of the people held out, by name."""
    return group_split(samples, test_fraction=FACES_WILD_TEST_FRACTION, seed=0)

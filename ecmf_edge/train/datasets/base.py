"""The sample record every dataset adapter yields, and speaker-independent splitting."""
from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ecmf_edge.errors import InputError

__all__ = ["Sample", "group_split", "check_root", "held_out_groups"]


@dataclass(frozen=True)
class Sample:
    """One labeled example; the media it has decide which modalities it can feed."""

    # Stable, unique id ("corpus:relative/path").
    id: str
    corpus: str
    # Person (actor, speaker, subject) or dialogue: no group is ever in two splits.
    group: str
    # Label mapped to the bundle's label set, and the corpus' own label.
    label: str
    source_label: str
    audio: Path | None = None
    video: Path | None = None
    # A face image (already a crop: FER2013, CK+).
    image: Path | None = None
    text: str | None = None
    # Earlier utterances of the conversation (oldest first), read by the text branch.
    history: tuple[str, ...] = ()


def check_root(root: str | Path, what: str, layout: str) -> Path:
    """The corpus folder, or an InputError that shows the expected layout."""
    path = Path(root)
    if not path.is_dir():
        raise InputError(f"{what} folder {path} does not exist: expected {layout}")
    return path


def _bucket(group: str, seed: int) -> float:
    digest = hashlib.sha256(f"{seed}:{group}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def held_out_groups(groups, corpora, fraction: float, seed: int):
    """Boolean mask of the rows whose group (person, dialogue) is held out: ``fraction`` of each
    corpus' groups (at least one), drawn with ``seed`` (for early stopping on unseen people)."""
    import numpy as np

    groups, corpora = np.asarray(groups), np.asarray(corpora)
    rng = np.random.default_rng(seed)
    held = np.zeros(len(groups), bool)
    for corpus in np.unique(corpora):
        members = np.unique(groups[corpora == corpus])
        chosen = rng.choice(members, size=max(1, int(round(len(members) * fraction))), replace=False)
        held |= (corpora == corpus) & np.isin(groups, chosen)
    return held


def group_split(samples: Sequence[Sample], test_groups: Iterable[str] | None = None, test_fraction: float = 0.2,
                seed: int = 0) -> tuple[list[Sample], list[Sample]]:
    """Split by group (person or dialogue), never by clip.

    ``test_groups`` names the held-out groups explicitly; otherwise a deterministic hash
    of each group puts about ``test_fraction`` of the groups into the test split.
    """
    if test_groups is not None:
        held = set(test_groups)
        test = [s for s in samples if s.group in held]
    else:
        test = [s for s in samples if _bucket(s.group, seed) < test_fraction]
    test_ids = {s.id for s in test}
    train = [s for s in samples if s.id not in test_ids]
    overlap = {s.group for s in train} & {s.group for s in test}
    assert not overlap, f"group leak: {sorted(overlap)[:3]}"  # internal invariant, not user input
    return train, test

"""MELD (Multimodal EmotionLines Dataset) text adapter.

Expected layout (the CSVs of the MELD repository, ``data/MELD/``)::

    <root>/train_sent_emo.csv
    <root>/dev_sent_emo.csv

Columns used: Utterance, Speaker, Emotion, Dialogue_ID, Utterance_ID. Labels are mapped
with the explicit ``meld`` table of :mod:`ecmf_edge.labels` (disgust is dropped by default).
Only the train and dev splits are read; the test split is reserved for independent evaluation.
"""
from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from ecmf_edge.errors import InputError
from ecmf_edge.labels import map_label

__all__ = ["MeldUtterance", "read_meld", "SPLITS"]

SPLITS = {"train": "train_sent_emo.csv", "dev": "dev_sent_emo.csv"}


@dataclass(frozen=True)
class MeldUtterance:
    text: str
    speaker: str
    label: str  # mapped MER2025 label
    source_label: str
    dialogue_id: int
    utterance_id: int
    # Earlier utterances of the same dialogue, oldest first (at most ``history`` of them; dropped
    # labels such as disgust still count as conversation).
    history: tuple[str, ...] = ()


def _clean(text: str) -> str:
    # MELD's CSVs carry mis-decoded punctuation (cp1252 read as latin-1): repair the common ones.
    for bad, good in (("\u0092", "'"), ("\u0091", "'"), ("\u0093", '"'), ("\u0094", '"'), ("\u0097", "-"), ("\u0085", "...")):
        text = text.replace(bad, good)
    return " ".join(text.replace("\u2019", "'").split())


def read_meld(root: str | Path, split: str = "train", history: int = 2) -> list[MeldUtterance]:
    """Utterances of one split with labels mapped to the default label set, each with up to
    ``history`` earlier utterances of its dialogue.

    Raises:
        InputError: unknown split, or the CSV is missing or lacks the expected columns.
    """
    if split not in SPLITS:
        raise InputError(f"unknown MELD split '{split}': use one of {', '.join(SPLITS)} (the test split is reserved)")
    path = Path(root) / SPLITS[split]
    if not path.is_file():
        raise InputError(f"{path} not found: put MELD's data/MELD/{SPLITS[split]} there")
    out: list[MeldUtterance] = []
    said: dict[int, list[str]] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        need = {"Utterance", "Speaker", "Emotion", "Dialogue_ID", "Utterance_ID"}
        if not need <= set(reader.fieldnames or ()):
            raise InputError(f"{path} lacks the MELD columns {', '.join(sorted(need))}: is it a MELD *_sent_emo.csv?")
        for row in reader:
            label = map_label("meld", row["Emotion"].strip().lower())
            text = _clean(row["Utterance"])
            dialogue = said.setdefault(int(row["Dialogue_ID"]), [])
            if label is not None and text:
                earlier = tuple(dialogue[-history:]) if history > 0 else ()
                out.append(MeldUtterance(text, row["Speaker"], label, row["Emotion"], int(row["Dialogue_ID"]),
                                         int(row["Utterance_ID"]), earlier))
            if text:
                dialogue.append(text)
    return out

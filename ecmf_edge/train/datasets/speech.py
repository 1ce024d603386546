"""Speech and audio-visual corpora named by file-name conventions: RAVDESS, CREMA-D, EmoDB.

RAVDESS: ``<root>/**/MM-VC-EE-II-SS-RR-AA.(wav|mp4)`` — MM modality (01 audio-video,
02 video-only, 03 audio-only), EE emotion (01 neutral 02 calm 03 happy 04 sad 05 angry
06 fearful 07 disgust 08 surprised), AA actor.
CREMA-D: ``<root>/AudioWAV/AAAA_SSS_EMO_LL.wav`` and ``<root>/VideoFlash/AAAA_SSS_EMO_LL.flv``
(or .mp4), EMO one of ANG DIS FEA HAP NEU SAD, AAAA actor.
EmoDB: ``<root>/SSTTTEV.wav`` — SS speaker, E emotion letter (W anger, L boredom, E disgust,
A fear, F happiness, T sadness, N neutral).
"""
from __future__ import annotations

import re
from pathlib import Path

from ecmf_edge.labels import map_label
from ecmf_edge.train.datasets.base import Sample, check_root

__all__ = ["read_ravdess", "read_cremad", "read_emodb", "RAVDESS_EMOTIONS", "EMODB_EMOTIONS"]

RAVDESS_EMOTIONS = {"01": "neutral", "02": "calm", "03": "happy", "04": "sad", "05": "angry", "06": "fearful",
                    "07": "disgust", "08": "surprised"}
EMODB_EMOTIONS = {"W": "anger", "L": "boredom", "E": "disgust", "A": "fear", "F": "happiness", "T": "sadness", "N": "neutral"}
_RAVDESS = re.compile(r"^(0[123])-0[12]-(0[1-8])-0[12]-0[12]-0[12]-(\d{2})\.(wav|mp4)$")
_CREMAD = re.compile(r"^(\d{4})_([A-Z]{3})_(ANG|DIS|FEA|HAP|NEU|SAD)_([A-Z]{2})\.(wav|flv|mp4)$")
_EMODB = re.compile(r"^(\d{2})([a-z]\d{2})([WLEAFTN])([a-z]?)\.wav$")


def read_ravdess(root: str | Path, actors: set[int] | None = None, audio_only: bool = False) -> list[Sample]:
    """RAVDESS clips (audio-only .wav and audio-visual .mp4) with mapped labels.

    Args:
        actors: keep only these actor numbers (e.g. 1..18).
        audio_only: ignore the video files.
    """
    base = check_root(root, "RAVDESS", "Actor_XX/03-01-EE-II-SS-RR-AA.wav (and 01-01-...mp4 for video)")
    out: list[Sample] = []
    for path in sorted(base.rglob("*")):
        m = _RAVDESS.match(path.name)
        if not m or (audio_only and m.group(4) == "mp4"):
            continue
        modality, emotion, actor = m.group(1), RAVDESS_EMOTIONS[m.group(2)], int(m.group(3))
        if actors is not None and actor not in actors:
            continue
        label = map_label("ravdess", emotion)
        if label is None:
            continue
        rel = path.relative_to(base).as_posix()
        audio = path if path.suffix == ".wav" else (path if modality == "01" else None)
        video = path if path.suffix == ".mp4" else None
        out.append(Sample(f"ravdess:{rel}", "ravdess", f"ravdess:{actor:02d}", label, emotion, audio=audio, video=video))
    return out


def read_cremad(root: str | Path) -> list[Sample]:
    """CREMA-D audio clips (and videos where present) with mapped labels."""
    base = check_root(root, "CREMA-D", "AudioWAV/1001_DFA_ANG_XX.wav (and VideoFlash/*.flv)")
    videos = {p.stem: p for p in base.rglob("*") if p.suffix in (".flv", ".mp4")}
    out = []
    for path in sorted(base.rglob("*.wav")):
        m = _CREMAD.match(path.name)
        if not m:
            continue
        label = map_label("cremad", m.group(3))
        if label is None:
            continue
        out.append(Sample(f"cremad:{path.stem}", "cremad", f"cremad:{m.group(1)}", label, m.group(3), audio=path,
                          video=videos.get(path.stem)))
    return out


def read_emodb(root: str | Path, speakers: set[str] | None = None) -> list[Sample]:
    """Berlin EmoDB clips; labels come from the file name (6th character)."""
    base = check_root(root, "EmoDB", "SSTTTEV.wav files (e.g. 03a01Fa.wav)")
    out = []
    for path in sorted(base.rglob("*.wav")):
        m = _EMODB.match(path.name)
        if not m or (speakers is not None and m.group(1) not in speakers):
            continue
        emotion = EMODB_EMOTIONS[m.group(3)]
        label = map_label("emodb", emotion)
        if label is None:
            continue
        out.append(Sample(f"emodb:{path.name}", "emodb", f"emodb:{m.group(1)}", label, emotion, audio=path))
    return out

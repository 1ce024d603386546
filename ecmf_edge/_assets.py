"""Paths of the small reference inputs shipped in ``ecmf_edge/assets`` (see its README)."""
from __future__ import annotations

from importlib.resources import files
from pathlib import Path

__all__ = ["asset_path"]


def asset_path(name: str) -> Path:
    """Filesystem path of a shipped asset (``astronaut.jpg``, ``coffee.jpg``, ``speech_en.wav``)."""
    return Path(str(files("ecmf_edge") / "assets" / name))

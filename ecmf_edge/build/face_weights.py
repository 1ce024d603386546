"""The fine-tuned face branch's weights on disk: ``face_encoder_finetuned.npz`` (the network's state,
floating tensors as float16) and its record ``face_encoder.json`` (the backbone and input size it was
trained with, the test-time views it was chosen with, data and metrics).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ecmf_edge.build.common import require_torch
from ecmf_edge.build.face_networks import INPUT_SIZE, build_face_network
from ecmf_edge.build.face_views import TTA_SHIFTS
from ecmf_edge.errors import ModelError

__all__ = [
    "FINETUNED_FILE",
    "FINETUNED_RECORD",
    "finetuned_network",
    "finetuned_record",
    "finetuned_views",
    "save_finetuned",
    "load_finetuned",
]

FINETUNED_FILE = "face_encoder_finetuned.npz"
FINETUNED_RECORD = "face_encoder.json"


def _record(folder: Path) -> dict:
    try:
        return json.loads((Path(folder) / FINETUNED_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{Path(folder) / FINETUNED_RECORD} is not readable JSON ({exc}): reinstall ecmf-edge or retrain "
                         "with `ecmf-edge train --branch face`") from None


def finetuned_network(record: dict) -> tuple[str, int]:
    """(backbone, input size) of a fine-tuned face branch's record (records without them: the mini-Xception)."""
    options = record.get("options", {})
    return options.get("backbone", "mini_xception"), int(options.get("size", INPUT_SIZE))


def finetuned_record(folder: Path) -> dict:
    """The ``face_encoder.json`` record of a fine-tuned face branch in ``folder``.

    Raises:
        ModelError: the file is missing or not JSON.
    """
    return _record(folder)


def save_finetuned(model, folder: Path) -> Path:
    """Write a fine-tuned face network's state as ``face_encoder_finetuned.npz`` (floating tensors as float16)."""
    state = {}
    for key, value in model.state_dict().items():
        array = value.detach().cpu().numpy()
        state[key] = array.astype(np.float16) if array.dtype.kind == "f" else array
    path = Path(folder) / FINETUNED_FILE
    np.savez_compressed(path, **state)
    return path


def load_finetuned(folder: Path):
    """The fine-tuned face branch (torch, eval mode, float32) from ``face_encoder_finetuned.npz`` in ``folder``; its
    network (``options.backbone``, ``options.size`` of ``face_encoder.json``; mini-Xception when absent).

    Raises:
        DependencyError: torch is not installed.
        ModelError: the files are missing or do not fit the network.
    """
    torch = require_torch()
    backbone, size = finetuned_network(_record(folder))
    model = build_face_network(backbone, size)
    try:
        with np.load(Path(folder) / FINETUNED_FILE, allow_pickle=False) as data:
            state = {k: torch.from_numpy(np.asarray(data[k], dtype=np.float32 if data[k].dtype.kind == "f" else data[k].dtype))
                     for k in data.files}
        model.load_state_dict(state, strict=True)
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelError(f"{Path(folder) / FINETUNED_FILE} does not fit {backbone} ({str(exc).splitlines()[0][:120]}): "
                         "reinstall ecmf-edge or retrain with `ecmf-edge train --branch face`") from None
    return model.eval()


def finetuned_views(record: dict) -> tuple[tuple, bool]:
    """(shifts, mirrored) of the test-time views a fine-tuned face branch was trained and chosen with."""
    views = record.get("views")
    if views is None:  # records written before the views were stored: the mini-Xception's
        return TTA_SHIFTS, True
    return tuple(tuple(int(v) for v in shift) for shift in views["shifts"]), bool(views["mirror"])

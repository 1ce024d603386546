"""``ecmf-edge doctor``: what this installation has and whether it can run.

Each check is a row (area, item, status, detail). ``--check`` turns failed required
rows into a non-zero exit.
"""
from __future__ import annotations

import glob
import platform
import sys
from dataclasses import dataclass

from ecmf_edge._resources import package_version
from ecmf_edge.modalities import REBUILD_COMMAND

__all__ = ["Check", "run_checks", "format_table"]

# (import name, distribution, extra that installs it, required for inference)
PACKAGES: tuple[tuple[str, str, str, bool], ...] = (
    ("numpy", "numpy", "core", True),
    ("onnxruntime", "onnxruntime", "core", True),
    ("cv2", "opencv-python-headless", "core", True),
    ("tokenizers", "tokenizers", "core", True),
    ("torch", "torch", "build", False),
    ("onnx", "onnx", "build", False),
    ("faster_whisper", "faster-whisper", "asr", False),
    ("ctranslate2", "ctranslate2", "asr", False),
    ("llama_cpp", "llama-cpp-python", "llm", False),
    ("sounddevice", "sounddevice", "live", False),
    ("tensorrt", "tensorrt", "trt", False),
)


@dataclass(frozen=True)
class Check:
    """One row of the doctor's report."""

    area: str
    item: str
    ok: bool
    detail: str
    # A failed required row makes `doctor --check` exit non-zero.
    required: bool = False

    @property
    def status(self) -> str:
        return "ok" if self.ok else ("FAIL" if self.required else "missing")


def _package_rows() -> list[Check]:
    import importlib.util

    rows = []
    for module, dist, extra, required in PACKAGES:
        found = importlib.util.find_spec(module) is not None
        version = package_version(dist) if found else ""
        if module == "cv2" and found and version == "unknown":
            version = package_version("opencv-python")
        detail = version if found else f"not installed: pip install 'ecmf-edge[{extra}]'"
        rows.append(Check("package", module, found, detail, required))
    return rows


def _provider_rows() -> list[Check]:
    try:
        from ecmf_edge.runtime.sessions import available_providers

        return [Check("onnxruntime", "providers", True, ", ".join(available_providers()), True)]
    except Exception as exc:
        return [Check("onnxruntime", "providers", False, f"{type(exc).__name__}: {exc}", True)]


def _camera_rows() -> list[Check]:
    nodes = sorted(glob.glob("/dev/video*")) if sys.platform.startswith("linux") else []
    if sys.platform.startswith("linux"):
        detail = ", ".join(nodes) if nodes else "no /dev/video* device: connect a camera or use --video FILE"
        return [Check("device", "cameras", bool(nodes), detail)]
    return [Check("device", "cameras", True, "not probed on this platform: try `ecmf-edge run --camera 0`")]


def _microphone_rows() -> list[Check]:
    try:
        import sounddevice as sd
    except ImportError:
        return [Check("device", "microphones", False, "sounddevice not installed: pip install 'ecmf-edge[live]'")]
    except OSError as exc:  # PortAudio library missing
        return [Check("device", "microphones", False, f"{exc}: install the PortAudio library (Debian: apt-get install libportaudio2)")]
    try:
        inputs = [d["name"] for d in sd.query_devices() if d.get("max_input_channels", 0) > 0]
    except Exception as exc:
        return [Check("device", "microphones", False, f"PortAudio could not list devices ({exc})")]
    return [Check("device", "microphones", bool(inputs), ", ".join(inputs) if inputs else "no input device: connect a microphone or use --audio FILE")]


def _bundle_rows(source, verify: bool) -> list[Check]:
    from ecmf_edge.errors import EcmfError
    from ecmf_edge.runtime.bundle import load_bundle

    try:
        bundle = load_bundle(source, build_if_missing=False)
    except EcmfError as exc:
        return [Check("bundle", str(source), False, str(exc), True)]
    rows = [Check("bundle", bundle.name, True, f"{bundle.root} (labels: {', '.join(bundle.labels)})", True)]
    if verify and "fusion_head" in bundle.manifest.get("models", {}):
        rows.append(_smoke_row(bundle))
    for key in bundle.manifest["models"]:
        if not verify:
            rows.append(Check("model", key, True, "not verified (use --verify)"))
            continue
        try:
            files = bundle.verify(key)
            rows.append(Check("model", key, True, f"sha256 ok ({len(files)} file{'s' if len(files) > 1 else ''})", True))
        except EcmfError as exc:
            rows.append(Check("model", key, False, str(exc), True))
    return rows


def _smoke_row(bundle) -> Check:
    """Run the fusion head once on neutral inputs: proves ONNX Runtime can load and execute the bundle here."""
    import numpy as np

    from ecmf_edge.errors import EcmfError

    try:
        from ecmf_edge.runtime.fusion_head import FusionHead

        head = FusionHead.from_bundle(bundle)
        features = {m: np.zeros(head.dims[m], np.float32) for m in head.modalities}
        result = head.predict(features)
        probs = np.asarray(result.probabilities, dtype=np.float64)
        if probs.shape != (len(bundle.labels),) or not np.all(np.isfinite(probs)) or abs(probs.sum() - 1) > 1e-3:
            return Check("inference", "fusion_head", False, "the fusion head gives invalid probabilities: run "
                         f"`{REBUILD_COMMAND}` to rebuild the bundle", True)
    except EcmfError as exc:
        return Check("inference", "fusion_head", False, str(exc), True)
    except Exception as exc:  # a broken ONNX Runtime install fails here, not in the middle of a stream
        return Check("inference", "fusion_head", False, f"ONNX Runtime cannot run the bundle ({type(exc).__name__}: "
                     f"{str(exc).splitlines()[0][:120] if str(exc) else ''}): reinstall onnxruntime", True)
    return Check("inference", "fusion_head", True, "runs (ONNX Runtime executes the bundle)", True)


def run_checks(bundle: str = "default", verify: bool = True) -> list[Check]:
    """Every row of the report."""
    rows = [Check("system", "python", sys.version_info >= (3, 10), f"{platform.python_version()} on {platform.platform()}", True)]
    rows += _package_rows() + _provider_rows() + _camera_rows() + _microphone_rows() + _bundle_rows(bundle, verify)
    return rows


def format_table(rows: list[Check]) -> str:
    """Fixed-width table of the rows."""
    header = ("area", "item", "status", "detail")
    cells = [header] + [(r.area, r.item, r.status, r.detail) for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:<{widths[2]}}  {d}" for a, b, c, d in cells]
    lines.insert(1, "-" * min(100, sum(widths) + 6 + 20))
    return "\n".join(lines)

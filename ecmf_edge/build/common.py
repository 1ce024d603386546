"""Shared pieces of every exporter: the record an exporter returns (read from its ONNX file, with a
registry package's provenance), ONNX export with torch (checked against torch on real inputs),
reading an ONNX file's I/O signature, and the parity check.

An exporter is a function ``export_<model>(out_dir: Path) -> ExportedModel`` that
converts pretrained weights from an installed registry package into an ONNX file in
``out_dir``, checks the ONNX output against the source framework on real inputs, and
describes the model for the bundle manifest. The orchestrator (``export.bundle``) adds
the sha256 of every file.
"""
from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ecmf_edge.errors import ModelError, missing_dependency

__all__ = ["ExportedModel", "package_provenance", "onnx_export", "export_checked", "onnx_io", "check_parity", "require_torch",
           "json_default", "OPSET"]

logger = logging.getLogger("ecmf_edge")

# ONNX opset every exporter targets (DESIGN: opset >= 17).
OPSET = 17


@dataclass
class ExportedModel:
    """What one exporter produced, as it goes into ``manifest.json``."""

    # Key of the model in the manifest ("face_detector", "face_encoder", ...).
    key: str
    # Main ONNX file name, relative to the bundle folder.
    file: str
    # Inputs as dicts: {"name", "shape" (ints or axis names), "dtype"}.
    inputs: list[dict[str, Any]]
    # Outputs, same form as inputs.
    outputs: list[dict[str, Any]]
    # How raw data becomes the input tensor (colour order, size, scaling, layout ...).
    preprocessing: dict[str, Any]
    # Where the weights came from: {"package", "version", "file", "licence", "architecture"}.
    provenance: dict[str, Any]
    # Result of the parity check: {"reference", "inputs", "max_abs_diff", "tolerance", ...}.
    parity: dict[str, Any]
    # Other files of this model in the bundle (tokenizer, extra graphs), relative names.
    extra_files: list[str] = field(default_factory=list)
    # Model-specific facts the runtime needs (class labels of a classifier, feature size ...).
    attributes: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_onnx(cls, key: str, path: Path, *, preprocessing: dict[str, Any], provenance: dict[str, Any],
                  parity: dict[str, Any], extra_files: Sequence[str] = (), attributes: dict[str, Any] | None = None
                  ) -> ExportedModel:
        """The record of the model whose main file is ``path`` (its inputs and outputs read from the file)."""
        inputs, outputs = onnx_io(path)
        return cls(key=key, file=Path(path).name, inputs=inputs, outputs=outputs, preprocessing=preprocessing,
                   provenance=provenance, parity=parity, extra_files=list(extra_files), attributes=dict(attributes or {}))


def package_provenance(package: str, file: str, licence: str, architecture: str) -> dict[str, Any]:
    """Where pretrained weights came from: the registry ``package`` (and its installed version), the
    ``file`` in it, the weights' ``licence`` and the network's ``architecture``."""
    from ecmf_edge._resources import package_version

    return {"package": package, "version": package_version(package), "file": file, "licence": licence,
            "architecture": architecture}


def require_torch():
    """Import torch for exporting, or fail with the extra that installs it."""
    try:
        import torch
    except ImportError:
        raise missing_dependency("torch", "build") from None
    return torch


def onnx_export(
    module,
    args: tuple,
    path: Path,
    input_names: Sequence[str],
    output_names: Sequence[str],
    dynamic_axes: dict[str, dict[int, str]] | None = None,
) -> Path:
    """Export a torch module to ONNX (TorchScript exporter, opset :data:`OPSET`) and check the file."""
    torch = require_torch()
    import onnx

    module.eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    import warnings

    with torch.no_grad(), warnings.catch_warnings():
        # the TorchScript exporter is deprecated upstream but is the one that handles these graphs
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=list(input_names),
            output_names=list(output_names),
            dynamic_axes=dynamic_axes or {},
            opset_version=OPSET,
            do_constant_folding=True,
            dynamo=False,
        )
    onnx.checker.check_model(str(path))
    return path


def export_checked(name: str, module, x: np.ndarray, path: Path, input_name: str, output_names: Sequence[str],
                   checked: dict[str, float]) -> dict[str, float]:
    """Export a torch module with one input whose first axis, like every output's, is the batch (traced on the
    first two rows of ``x``), then run torch and ONNX Runtime on all of ``x``: each output named in ``checked``
    must agree within its tolerance. Returns the max absolute difference per checked output.

    Raises:
        ModelError: an output differs by more than its tolerance.
    """
    torch = require_torch()
    import onnxruntime as ort

    onnx_export(module, (torch.from_numpy(x[:2]),), path, [input_name], output_names,
                {axis: {0: "batch"} for axis in (input_name, *output_names)})
    with torch.no_grad():
        expected = dict(zip(output_names, (t.numpy() for t in module(torch.from_numpy(x)))))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip(checked, session.run(list(checked), {input_name: x})))
    return {output: check_parity(f"{name} onnx vs torch ({output})", expected[output], got[output], tolerance)
            for output, tolerance in checked.items()}


def onnx_io(path: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Inputs and outputs of an ONNX file as manifest dicts (symbolic axes keep their names)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    initializers = {i.name for i in model.graph.initializer}

    def describe(values) -> list[dict[str, Any]]:
        out = []
        for v in values:
            if v.name in initializers:
                continue
            t = v.type.tensor_type
            shape = [d.dim_param if d.dim_param else (d.dim_value if d.HasField("dim_value") else None) for d in t.shape.dim]
            out.append({"name": v.name, "shape": shape, "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name})
        return out

    return describe(model.graph.input), describe(model.graph.output)


def check_parity(name: str, reference: np.ndarray, candidate: np.ndarray, tolerance: float) -> float:
    """Max absolute difference between reference and candidate; ModelError if above tolerance."""
    reference = np.asarray(reference, dtype=np.float64)
    candidate = np.asarray(candidate, dtype=np.float64)
    if reference.shape != candidate.shape:
        raise ModelError(f"{name}: parity check failed, shapes differ ({reference.shape} vs {candidate.shape})")
    diff = float(np.max(np.abs(reference - candidate))) if reference.size else 0.0
    if not np.isfinite(diff) or diff > tolerance:
        raise ModelError(f"{name}: parity check failed, max abs diff {diff:.3g} > tolerance {tolerance:g}")
    logger.info("%s parity: max abs diff %.3g (tolerance %g)", name, diff, tolerance)
    return diff


def json_default(value):
    """``json.dumps(default=...)`` for numpy scalars/arrays and paths in export records."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@contextmanager
def staged_dir(out: Path) -> Iterator[Path]:
    """Write a folder as ``<out>.partial`` and move it to ``out`` only when the block succeeds
    (a failed or interrupted build never leaves a half-written ``out`` behind)."""
    partial = out.with_name(out.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if out.exists():
        shutil.rmtree(out)
    partial.rename(out)


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link an unchanged file into a derived bundle (bundles are never edited in place);
    copy across file systems. A file shared by several models (a tokenizer) is placed once."""
    from ecmf_edge.runtime.bundle import sha256_file

    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.stat().st_size == source.stat().st_size and (
            os.path.samefile(source, target) or sha256_file(source) == sha256_file(target)):
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)

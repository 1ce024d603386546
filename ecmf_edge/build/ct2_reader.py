"""Reading the variables of a CTranslate2 ``model.bin`` into numpy arrays.

The layout is the one written by ``ctranslate2.specs.model_spec.ModelSpec._serialize``
(binary version 6, little-endian, no padding)::

    uint32 version
    string spec_name            # string = uint16 length (incl. NUL), utf-8 bytes, NUL
    uint32 revision
    uint32 n_variables
    n_variables x (string name, uint8 rank, rank x uint32 dim,
                   uint8 dtype_id, uint32 n_bytes, n_bytes data)
    uint32 n_aliases
    n_aliases x (string alias, string variable_name)

``dtype_id`` indexes ("float32", "int8", "int16", "int32", "float16", "bfloat16").
Quantized weights ``<name>`` (int8: per output row; int16: one scalar) come with a
``<name>_scale`` variable such that ``float = quantized / scale``.
"""
from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np

from ecmf_edge.errors import ModelError
from ecmf_edge.modalities import REBUILD_COMMAND

__all__ = ["CT2Model", "read_ct2_model", "SUPPORTED_BINARY_VERSIONS"]

logger = logging.getLogger("ecmf_edge")

# Binary versions whose layout is the one documented above (written by ctranslate2 >= 3).
SUPPORTED_BINARY_VERSIONS = (5, 6)
_DTYPES = ("float32", "int8", "int16", "int32", "float16", "bfloat16")
_ITEM_SIZE = {"float32": 4, "int8": 1, "int16": 2, "int32": 4, "float16": 2, "bfloat16": 2}


@dataclass
class CT2Model:
    """Contents of a ``model.bin``: spec name, revision, variables and quantization seen."""

    spec: str
    revision: int
    binary_version: int
    variables: dict[str, np.ndarray]
    # Stored dtype of every variable read (before dequantization), e.g. {"...weight": "float16"}.
    stored_dtypes: dict[str, str] = field(default_factory=dict)

    # Names of the weights that were stored quantized (they had a ``_scale``).
    quantized: list[str] = field(default_factory=list)

    @property
    def quantization(self) -> str:
        """Storage type of the weights: "int8", "int16", "float16", "bfloat16" or "float32"."""
        if self.quantized:
            return self.stored_dtypes[self.quantized[0]]
        kinds = {kind for name, kind in self.stored_dtypes.items() if self.variables[name].ndim > 0}
        for kind in ("float16", "bfloat16"):
            if kind in kinds:
                return kind
        return "float32"


class _Reader:
    def __init__(self, handle: BinaryIO, path: Path, size: int) -> None:
        self.handle = handle
        self.path = path
        self.size = size

    def _fail(self, what: str) -> ModelError:
        return ModelError(
            f"{self.path} is truncated or corrupt ({what} at byte {self.handle.tell()} of {self.size}): "
            f"delete it and run `{REBUILD_COMMAND}`"
        )

    def read(self, n: int, what: str) -> bytes:
        if n < 0 or self.handle.tell() + n > self.size:
            raise self._fail(f"{what} needs {n} bytes")
        data = self.handle.read(n)
        if len(data) != n:
            raise self._fail(f"short read of {what}")
        return data

    def skip(self, n: int, what: str) -> None:
        if self.handle.tell() + n > self.size:
            raise self._fail(f"{what} needs {n} bytes")
        self.handle.seek(n, 1)

    def u8(self, what: str) -> int:
        return struct.unpack("<B", self.read(1, what))[0]

    def u16(self, what: str) -> int:
        return struct.unpack("<H", self.read(2, what))[0]

    def u32(self, what: str) -> int:
        return struct.unpack("<I", self.read(4, what))[0]

    def string(self, what: str) -> str:
        length = self.u16(what)
        raw = self.read(length, what)
        if length == 0 or raw[-1] != 0:
            raise self._fail(f"{what} is not NUL-terminated")
        try:
            return raw[:-1].decode("utf-8")
        except UnicodeDecodeError:
            raise self._fail(f"{what} is not utf-8") from None


def _to_float32(raw: bytes, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    if dtype == "bfloat16":
        bits = np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    return np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<")).reshape(shape).astype(
        np.float32 if dtype in ("float16", "float32") else np.dtype(dtype)
    )


def _dequantize(variables: dict[str, np.ndarray], stored: dict[str, str]) -> list[str]:
    """Replace int8/int16 weights that have a ``<name>_scale`` by float32 values, in place."""
    done: list[str] = []
    for name in [n for n, kind in stored.items() if kind in ("int8", "int16")]:
        scale_name = f"{name}_scale"
        if scale_name not in variables:
            continue
        value = variables[name].astype(np.float32)
        scale = variables[scale_name].astype(np.float32)
        if scale.ndim == 0 or scale.size == 1:
            value = value / float(scale.reshape(()))
        else:
            rows = value.shape[0]
            if scale.shape != (rows,):
                raise ModelError(
                    f"scale of {name} has shape {scale.shape}, expected ({rows},): the model file is corrupt, "
                    f"run `{REBUILD_COMMAND}`"
                )
            value = value / scale.reshape((rows,) + (1,) * (value.ndim - 1))
        variables[name] = value
        del variables[scale_name]
        done.append(name)
    return done


def read_ct2_model(
    path: str | Path,
    select: Callable[[str], bool] | None = None,
    dequantize: bool = True,
) -> CT2Model:
    """Read the variables of a CTranslate2 ``model.bin`` (or of the folder holding it).

    ``select`` keeps only the variables whose name it accepts (others are skipped without
    reading them; a selected weight's ``_scale`` is kept too). Floating-point variables
    are returned as float32; with ``dequantize`` int8/int16 weights are divided by their
    scales and returned as float32, and the ``_scale`` variables are dropped. Aliases
    point to the same array as their target.

    Raises:
        ModelError: the file is missing, truncated, corrupt or of an unsupported version.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "model.bin"
    if not path.is_file():
        raise ModelError(f"CTranslate2 model file {path} does not exist: run `ecmf-edge export` to build the bundle")
    size = path.stat().st_size

    def wanted(name: str) -> bool:
        if select is None:
            return True
        return select(name) or (name.endswith("_scale") and select(name[: -len("_scale")]))

    variables: dict[str, np.ndarray] = {}
    stored: dict[str, str] = {}
    with open(path, "rb") as handle:
        r = _Reader(handle, path, size)
        version = r.u32("binary version")
        if version not in SUPPORTED_BINARY_VERSIONS:
            raise ModelError(
                f"{path} has CTranslate2 binary version {version}, this reader supports "
                f"{', '.join(map(str, SUPPORTED_BINARY_VERSIONS))}: re-convert the model with ctranslate2 4.x"
            )
        spec = r.string("spec name")
        revision = r.u32("spec revision")
        count = r.u32("variable count")
        for index in range(count):
            name = r.string(f"name of variable {index}")
            rank = r.u8(f"rank of {name}")
            shape = tuple(r.u32(f"shape of {name}") for _ in range(rank))
            type_id = r.u8(f"dtype of {name}")
            if type_id >= len(_DTYPES):
                raise r._fail(f"unknown dtype id {type_id} of {name}")
            dtype = _DTYPES[type_id]
            n_bytes = r.u32(f"byte count of {name}")
            expected = int(np.prod(shape, dtype=np.int64)) * _ITEM_SIZE[dtype]
            if n_bytes != expected:
                raise r._fail(f"{name} declares {n_bytes} bytes, its shape {shape} x {dtype} needs {expected}")
            if not wanted(name):
                r.skip(n_bytes, f"data of {name}")
                continue
            variables[name] = _to_float32(r.read(n_bytes, f"data of {name}"), dtype, shape)
            stored[name] = dtype
        aliases: list[tuple[str, str]] = []
        n_aliases = r.u32("alias count")
        for index in range(n_aliases):
            alias = r.string(f"alias {index}")
            aliases.append((alias, r.string(f"target of alias {alias}")))
        if handle.tell() != size:
            raise r._fail(f"{size - handle.tell()} unexpected trailing bytes")
    quantized = [n for n in stored if f"{n}_scale" in variables] if not dequantize else _dequantize(variables, stored)
    for alias, target in aliases:
        if target in variables and wanted(alias):
            variables[alias] = variables[target]
            stored[alias] = stored[target]
    logger.debug("read %d variables of %s (%s, revision %d) from %s", len(variables), spec, version, revision, path)
    return CT2Model(spec=spec, revision=revision, binary_version=version, variables=variables, stored_dtypes=stored, quantized=quantized)

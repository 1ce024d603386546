"""Which backend x precision configurations a benchmark run covers, and which it skips (with why)."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from ecmf_edge.errors import InputError
from ecmf_edge.modalities import BACKEND_CHOICES, PRECISIONS

__all__ = ["Combo", "PRECISIONS", "expand", "plan_combos"]


@dataclass(frozen=True)
class Combo:
    """One configuration to measure."""

    backend: str
    precision: str
    # Set when the configuration is not measured: why (and how to make it available).
    skip_reason: str | None = None
    # Set when it resolves to another configuration of the same run (e.g. auto -> onnxruntime on a CPU).
    same_as: str | None = None

    @property
    def key(self) -> str:
        return f"{self.backend}-{self.precision}"


def expand(values: Iterable[str] | None, allowed: tuple[str, ...], what: str) -> list[str]:
    """``["all"]`` or None -> every allowed value; otherwise the values in order, without repeats.

    Raises:
        InputError: a value that is not allowed.
    """
    chosen: list[str] = []
    for value in values or ["all"]:
        for item in str(value).split(","):
            item = item.strip().lower()
            if not item:
                continue
            if item == "all":
                chosen.extend(allowed)
            elif item in allowed:
                chosen.append(item)
            else:
                raise InputError(f"unknown {what} {item!r}: use one of {', '.join(allowed)} or all")
    return list(dict.fromkeys(chosen))


def _auto_resolves_to_cpu() -> bool:
    from ecmf_edge.runtime.sessions import available_providers

    return "CUDAExecutionProvider" not in available_providers()


def plan_combos(backends: Iterable[str] | None, precisions: Iterable[str] | None) -> list[Combo]:
    """Every requested backend x precision. ``auto`` is marked as the same as ``onnxruntime`` when
    ONNX Runtime has no CUDA provider and ``onnxruntime`` is measured too (it would run the very
    same sessions); other unavailable configurations are found out by loading them (see the worker).

    Raises:
        InputError: an unknown backend or precision.
    """
    chosen_backends = expand(backends, BACKEND_CHOICES, "backend")
    chosen_precisions = expand(precisions, PRECISIONS, "precision")
    cpu_only = "auto" in chosen_backends and "onnxruntime" in chosen_backends and _auto_resolves_to_cpu()
    combos = []
    for backend in chosen_backends:
        for precision in chosen_precisions:
            if backend == "auto" and cpu_only:
                combos.append(Combo(backend, precision, same_as=f"onnxruntime-{precision}",
                                    skip_reason="auto resolves to onnxruntime (CPUExecutionProvider) on this machine: "
                                                "see the onnxruntime row"))
            else:
                combos.append(Combo(backend, precision))
    return combos

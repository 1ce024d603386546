"""Latency benchmarks: per stage, end to end, against peer packages, with scaling tables and plots.

``ecmf-edge bench`` (see :mod:`ecmf_edge.cli.bench`) calls :func:`~ecmf_edge.bench.runner.run_bench`,
which measures every available backend x precision in a child process of its own (so peak
RSS and CPU time are that configuration's), plays the fixed replay clip of
:mod:`~ecmf_edge.bench.replay` through the real stream loop at camera rate, and writes a
table, a JSON report (machine, versions, the bundles' sha256s) and PNG plots.
"""
from __future__ import annotations

__all__ = ["BenchOptions", "run_bench"]


def __getattr__(name: str):
    if name in __all__:
        from ecmf_edge.bench import runner

        return getattr(runner, name)
    raise AttributeError(name)

"""Facts about the machine and the software, and CPU / memory meters for this process."""
from __future__ import annotations

import os
import platform
import resource
import sys
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

__all__ = ["machine", "versions", "peak_rss_mb", "current_rss_mb", "CpuMeter"]

# Distributions whose versions go into every report.
_DISTRIBUTIONS = ("ecmf-edge", "onnxruntime", "numpy", "opencv-python-headless", "faster-whisper", "ctranslate2",
                  "llama_cpp_python", "tokenizers", "fer", "ai-edge-litert", "tensorrt")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _memory_gb() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / 2**20, 1)
    except (OSError, ValueError):
        pass
    return None


def _usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def machine() -> dict[str, object]:
    """CPU model, cores usable by this process, memory, OS and Python."""
    return {"cpu": _cpu_model(), "cores": os.cpu_count(), "usable_cores": _usable_cpus(), "memory_gb": _memory_gb(),
            "os": platform.platform(), "python": platform.python_version(), "hostname_hash": _host_hash()}


def _host_hash() -> str:
    """A short, non-identifying tag telling runs of one machine apart."""
    import hashlib

    return hashlib.sha256(platform.node().encode()).hexdigest()[:8]


def versions() -> dict[str, str]:
    """Installed versions of the packages that decide the figures (absent ones are left out)."""
    found = {}
    for dist in _DISTRIBUTIONS:
        try:
            found[dist] = version(dist)
        except PackageNotFoundError:
            continue
    return found


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, MiB."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / 1024.0 if sys.platform != "darwin" else rss / 2**20, 1)


def current_rss_mb() -> float | None:
    """Resident set size now, MiB (Linux /proc), or None elsewhere."""
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)


class CpuMeter:
    """CPU time (user + system, all threads) of this process over a wall-clock interval."""

    def __init__(self) -> None:
        self._cpu0 = self._cpu()
        self._wall0 = time.perf_counter()

    @staticmethod
    def _cpu() -> float:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        return usage.ru_utime + usage.ru_stime

    def read(self) -> dict[str, float]:
        """Wall seconds, CPU seconds, percent of one core, and percent of all usable cores."""
        wall = max(time.perf_counter() - self._wall0, 1e-9)
        cpu = self._cpu() - self._cpu0
        return {"wall_s": round(wall, 3), "cpu_s": round(cpu, 3), "cpu_percent_of_one_core": round(100.0 * cpu / wall, 1),
                "cpu_percent_of_machine": round(100.0 * cpu / wall / _usable_cpus(), 1)}

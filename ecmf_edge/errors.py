"""Error kinds raised by ecmf-edge.

Every error carries a one-line message that says what went wrong and how to fix it.
The command-line interface prints ``str(error)`` and exits non-zero; it never shows
a traceback for an ``EcmfError``.
"""
from __future__ import annotations

__all__ = ["EcmfError", "InputError", "ModelError", "DeviceError", "DependencyError"]


class EcmfError(Exception):
    """Base class of every error ecmf-edge raises on purpose."""

    def __init__(self, message: str) -> None:
        # One line only: callers print it as is.
        super().__init__(" ".join(str(message).split()))


class InputError(EcmfError, ValueError):
    """Bad user input: a missing or unreadable file, a wrong shape, empty or silent audio."""


class ModelError(EcmfError):
    """A model or bundle file that is missing, corrupt, mismatched or cannot be run."""


class DeviceError(EcmfError):
    """A camera, microphone or execution provider that is absent or stopped working."""


class DependencyError(EcmfError, ImportError):
    """An optional package that the requested feature needs is not installed."""


def missing_dependency(package: str, extra: str) -> DependencyError:
    """The error for an optional import that failed, naming the extra that installs it."""
    return DependencyError(
        f"{package} is not installed: run `pip install 'ecmf-edge[{extra}]'` (or `pip install {package}`)"
    )

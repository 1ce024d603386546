"""Model bundles: a folder with ``manifest.json`` and the model files it lists.

The manifest names every model, its files with sha256 and size, its inputs/outputs,
preprocessing, precision and provenance. Nothing is guessed from file names or
shapes. Every file is verified against its sha256 the first time it is used; a
missing, truncated, corrupt or Git-LFS-pointer file is a one-line :class:`ModelError`
naming the file and the command that rebuilds the bundle.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ecmf_edge.errors import DependencyError, InputError, ModelError
from ecmf_edge.modalities import BACKENDS, BUILD_EXTRA, EXPORT_COMMAND, PRECISIONS, REBUILD_COMMAND, install_hint
from ecmf_edge.runtime.sessions import SessionConfig, backend_session_config, create_session

__all__ = [
    "Bundle", "load_bundle", "resolve_bundle", "ensure_default_bundle", "engines_dir", "bundle_dir", "sha256_file", "MANIFEST",
    "MANIFEST_FORMAT", "DEFAULT_BUNDLE", "REBUILD_COMMAND", "BUILDER_GROUP",
]

logger = logging.getLogger("ecmf_edge")

MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
DEFAULT_BUNDLE = "default"
# Entry-point group through which an installed build layer offers to build the default bundle
# (``ecmf_edge.build.bundle:export_bundle``); the runtime never imports the build layer itself.
BUILDER_GROUP = "ecmf_edge.bundle_builders"
_LFS_PREFIX = b"version https://git-lfs"


def engines_dir() -> Path:
    """Root of built bundles: ``$ECMF_EDGE_ENGINES`` or ``~/.cache/ecmf-edge/engines``."""
    env = os.environ.get("ECMF_EDGE_ENGINES")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "ecmf-edge" / "engines"


def bundle_dir(name: str = DEFAULT_BUNDLE, backend: str = "onnxruntime", precision: str = "fp32", root: Path | None = None) -> Path:
    """Folder of one built bundle: ``<engines>/<name>/<backend>-<precision>``.

    Raises:
        InputError: unknown backend or precision.
    """
    if backend not in BACKENDS:
        raise InputError(f"unknown backend '{backend}': use one of {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision '{precision}': use one of {', '.join(PRECISIONS)}")
    return (root or engines_dir()) / name / f"{backend}-{precision}"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Bundle:
    """A loaded, lazily verified model bundle."""

    # Folder that holds manifest.json and the files.
    root: Path
    # The parsed manifest.
    manifest: dict[str, Any]
    # How ONNX Runtime sessions are built for this bundle's models.
    session_config: SessionConfig = field(default_factory=SessionConfig)
    _verified: set[str] = field(default_factory=set, repr=False)
    _sessions: dict[str, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __getstate__(self) -> dict[str, Any]:
        """A copy for another process (a worker, a Ray actor): the folder, manifest and session settings;
        sessions are opened and files verified again there."""
        return {"root": self.root, "manifest": self.manifest, "session_config": self.session_config}

    def __setstate__(self, state: dict[str, Any]) -> None:
        type(self).__init__(self, state["root"], state["manifest"], state["session_config"])

    @property
    def name(self) -> str:
        return str(self.manifest.get("name", self.root.name))

    @property
    def labels(self) -> list[str]:
        """The bundle's output label set."""
        return list(self.manifest["labels"])

    @property
    def precision(self) -> str:
        return str(self.manifest.get("precision", "fp32"))

    def has(self, key: str) -> bool:
        """Whether the bundle declares a model under ``key``."""
        return key in self.manifest.get("models", {})

    def spec(self, key: str) -> dict[str, Any]:
        """Manifest entry of one model.

        Raises:
            ModelError: the bundle has no such model.
        """
        models = self.manifest.get("models", {})
        if key not in models:
            raise ModelError(
                f"bundle '{self.name}' at {self.root} has no model '{key}' (it has: {', '.join(models) or 'none'}): "
                f"run `{REBUILD_COMMAND}`"
            )
        return models[key]

    def encoder_dims(self) -> dict[str, int]:
        """Each modality token's size as the encoders give it (before a trained branch maps it), from the
        manifest: the frame and face encoders' ``feature_dim``; audio = the speech encoder's token output
        (``token_output``, else ``pooled``) + the prosody values
        (:func:`~ecmf_edge.audio.speech_encoder.audio_token`); text = ``[embed(enriched); embed(transcript)]``,
        twice the text encoder's ``embedding_dim``.

        Raises:
            ModelError: the bundle lacks one of these encoders.
        """
        from ecmf_edge.audio.prosody import PROSODY_NAMES

        audio = self.spec("audio_encoder")
        token_output = audio.get("attributes", {}).get("token_output", "pooled")
        pooled = next((o for o in audio.get("outputs", []) if o.get("name") == token_output), None)
        if pooled is None:
            raise ModelError(f"bundle '{self.name}' at {self.root}: the audio encoder has no output '{token_output}': "
                             f"run `{REBUILD_COMMAND}`")
        return {"frame": int(self.spec("frame_encoder")["attributes"]["feature_dim"]),
                "face": int(self.spec("face_encoder")["attributes"]["feature_dim"]),
                "audio": int(pooled["shape"][-1]) + len(PROSODY_NAMES),
                "text": 2 * int(self.spec("text_encoder")["attributes"]["embedding_dim"])}

    def token_dims(self) -> dict[str, int]:
        """The fusion head's input size per modality token: the trained branches' embeddings where the bundle
        has them (``speech_head``, ``text_branch``), else :meth:`encoder_dims`."""
        dims = self.encoder_dims()
        if self.has("speech_head"):
            dims["audio"] = int(self.spec("speech_head")["attributes"]["embedding_dim"])
        if self.has("text_branch"):
            dims["text"] = int(self.spec("text_branch")["attributes"]["embedding_dim"])
        return dims

    def model_files(self, key: str) -> list[str]:
        """Every file of one model, main file first."""
        spec = self.spec(key)
        return [spec["file"], *spec.get("extra_files", [])]

    def path(self, relative: str) -> Path:
        """Path of a bundle file after checking it against the manifest's sha256.

        Raises:
            ModelError: the file is not listed, missing, truncated, an LFS pointer or corrupt.
        """
        with self._lock:
            if relative not in self._verified:
                verify_file(self.root, relative, self.manifest)
                self._verified.add(relative)
        return self.root / relative

    def verify(self, key: str | None = None) -> list[str]:
        """Verify every file (or every file of one model); returns the files checked.

        Raises:
            ModelError: the first file that fails.
        """
        files = self.model_files(key) if key else list(self.manifest.get("files", {}))
        for relative in files:
            self.path(relative)
        return files

    def session(self, relative: str):
        """Verified session for one model file of the bundle (cached): an ONNX Runtime
        session for ``.onnx`` files, a :class:`~ecmf_edge.runtime.tensorrt.TensorRTRunner`
        for ``.engine`` files (after checking the engines were built for this TensorRT and GPU)."""
        path = self.path(relative)
        with self._lock:
            if relative not in self._sessions:
                if relative.endswith(".engine"):
                    from ecmf_edge.runtime.tensorrt import EngineKey, TensorRTRunner

                    expected = EngineKey.from_dict(self.manifest.get("engine_key"))
                    self._sessions[relative] = TensorRTRunner(path, expected, precision=self.precision)
                else:
                    self._sessions[relative] = create_session(path, self.session_config)
            return self._sessions[relative]

    def close(self) -> None:
        """Drop the cached sessions (TensorRT runners free their device memory)."""
        with self._lock:
            for session in self._sessions.values():
                closer = getattr(session, "close", None)
                if callable(closer) and not hasattr(session, "get_session_options"):  # not an ORT session
                    closer()
            self._sessions.clear()


def verify_file(root: Path, relative: str, manifest: dict[str, Any]) -> None:
    """Check one file of a bundle against its manifest record.

    Raises:
        ModelError: with the file name and the rebuild command.
    """
    record = manifest.get("files", {}).get(relative)
    path = root / relative
    if record is None:
        raise ModelError(f"{relative} is not listed in {root / MANIFEST}: run `{REBUILD_COMMAND}`")
    if not path.is_file():
        raise ModelError(f"{path} is missing: run `{REBUILD_COMMAND}` to rebuild the bundle")
    size = path.stat().st_size
    if size < 200:
        with open(path, "rb") as fh:
            if fh.read(len(_LFS_PREFIX)) == _LFS_PREFIX:
                raise ModelError(f"{path} is a Git LFS pointer, not the model: run `{REBUILD_COMMAND}`")
    expected_size = record.get("bytes")
    if expected_size is not None and size != int(expected_size):
        raise ModelError(
            f"{path} is truncated or altered ({size} bytes, expected {expected_size}): run `{REBUILD_COMMAND}`"
        )
    if sha256_file(path) != record.get("sha256"):
        raise ModelError(f"{path} is corrupt (sha256 mismatch): run `{REBUILD_COMMAND}`")


def read_manifest(root: Path) -> dict[str, Any]:
    """Parse and sanity-check ``manifest.json``.

    Raises:
        ModelError: missing, unreadable or incomplete manifest.
    """
    path = root / MANIFEST
    if not path.is_file():
        raise ModelError(f"no bundle at {root} ({MANIFEST} missing): build it with `{EXPORT_COMMAND} --out {root}`, "
                         "or give the folder of a bundle exported elsewhere")
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON ({type(exc).__name__}): run `{REBUILD_COMMAND}`") from None
    if not isinstance(manifest, dict):
        raise ModelError(f"{path} is not a bundle manifest: run `{REBUILD_COMMAND}`")
    missing = [k for k in ("format", "name", "labels", "models", "files") if k not in manifest]
    if missing:
        raise ModelError(f"{path} lacks {', '.join(missing)}: run `{REBUILD_COMMAND}`")
    if isinstance(manifest["format"], int) and not isinstance(manifest["format"], bool) and manifest["format"] > MANIFEST_FORMAT:
        raise ModelError(
            f"bundle at {root} was written by a newer ecmf-edge (manifest format {manifest['format']}, this one reads "
            f"{MANIFEST_FORMAT}): upgrade with `pip install -U ecmf-edge`, or re-export it with this version: "
            f"`{REBUILD_COMMAND} --out {root}`"
        )
    if manifest["format"] != MANIFEST_FORMAT:
        raise ModelError(
            f"{path} has manifest format {manifest['format']!r}, this ecmf-edge reads {MANIFEST_FORMAT}: run `{REBUILD_COMMAND}`"
        )
    if not isinstance(manifest["labels"], list) or not manifest["labels"] or not all(isinstance(x, str) for x in manifest["labels"]):
        raise ModelError(f"{path} has no usable label list: run `{REBUILD_COMMAND}`")
    if not isinstance(manifest["models"], dict) or not isinstance(manifest["files"], dict):
        raise ModelError(f"{path} has malformed 'models' or 'files' entries: run `{REBUILD_COMMAND}`")
    for key, spec in manifest["models"].items():
        if not isinstance(spec, dict) or not isinstance(spec.get("file"), str):
            raise ModelError(f"{path}: model '{key}' has no file entry: run `{REBUILD_COMMAND}`")
        extra = spec.get("extra_files", [])
        if not isinstance(extra, list) or not all(isinstance(x, str) for x in extra):
            raise ModelError(f"{path}: model '{key}' has malformed extra_files: run `{REBUILD_COMMAND}`")
        for relative in [spec["file"], *extra]:
            record = manifest["files"].get(relative)
            if not isinstance(record, dict) or not isinstance(record.get("sha256"), str):
                raise ModelError(f"{path}: file {relative} of model '{key}' has no sha256 record: run `{REBUILD_COMMAND}`")
    return manifest


def _bundle_root(source: str | Path, backend: str, precision: str) -> Path:
    path = Path(source)
    if isinstance(source, Path) or os.sep in str(source) or "/" in str(source) or path.is_dir():
        return path
    return bundle_dir(str(source), backend, precision)


def load_bundle(
    source: str | Path = DEFAULT_BUNDLE,
    *,
    backend: str = "onnxruntime",
    precision: str = "fp32",
    session_config: SessionConfig | None = None,
    build_if_missing: bool | None = None,
) -> Bundle:
    """Open a bundle by name (under :func:`engines_dir`) or by folder path. Loading only loads:
    a missing bundle is an error naming the command that builds it (see :func:`ensure_default_bundle`).

    ``build_if_missing`` is accepted for compatibility and ignored (with a ``DeprecationWarning``
    when true): building is ``ecmf-edge export`` or :func:`ensure_default_bundle`.

    Raises:
        ModelError: no bundle there, or its manifest is unusable.
        InputError: unknown backend or precision.
    """
    if build_if_missing:
        warnings.warn("load_bundle(build_if_missing=True) no longer builds: call ensure_default_bundle() or run "
                      f"`{EXPORT_COMMAND}`", DeprecationWarning, stacklevel=2)
    root = _bundle_root(source, backend, precision)
    manifest = read_manifest(root)
    return Bundle(root=root, manifest=manifest, session_config=session_config or SessionConfig())


def resolve_bundle(bundle: Any, backend: str = "auto", precision: str = "fp32", model_threads: int = 1) -> Bundle:
    """The bundle a :class:`~ecmf_edge.Recognizer` runs: ``bundle`` as given when it is a loaded :class:`Bundle`,
    else the named bundle or folder for this backend and precision, its sessions set up by
    :func:`~ecmf_edge.runtime.sessions.backend_session_config` (the default fp32 bundle is exported first when
    missing, see :func:`ensure_default_bundle`).

    Raises:
        ModelError: no such bundle (the message names the command that builds it).
        InputError: the bundle's precision is not ``precision``.
    """
    if isinstance(bundle, Bundle):
        loaded = bundle
    else:
        source = DEFAULT_BUNDLE if bundle is None else bundle
        config = backend_session_config(backend, model_threads)
        engine = "tensorrt" if backend == "tensorrt" else "onnxruntime"
        path = Path(source)
        is_path = isinstance(source, Path) or "/" in str(source) or "\\" in str(source) or path.is_dir()
        if not is_path:
            root = bundle_dir(str(source), engine, precision)
            if not (root / MANIFEST).is_file() and (engine == "tensorrt" or precision != "fp32"):
                fix = (f"build it with `ecmf-edge quantize --precision {precision}`" if engine == "onnxruntime" else
                       f"build it on this machine with `ecmf-edge build-engine --precision {precision}` "
                       "(engines are specific to the TensorRT version and GPU)")
                raise ModelError(f"no {engine} {precision} bundle '{source}' at {root}: {fix}")
            if str(source) == DEFAULT_BUNDLE and engine == "onnxruntime" and precision == "fp32":
                source = ensure_default_bundle()
        loaded = load_bundle(source, backend=engine, precision=precision, session_config=config)
    if loaded.precision != precision:
        raise InputError(f"bundle '{loaded.name}' at {loaded.root} is {loaded.precision} but precision='{precision}' "
                         f"was asked: pass precision='{loaded.precision}' or another bundle")
    return loaded


def _installed_builder():
    """The function an installed build layer registers to export the default bundle, or None."""
    from importlib.metadata import entry_points

    for entry in entry_points(group=BUILDER_GROUP):
        if entry.name == DEFAULT_BUNDLE:
            return entry
    return None


def ensure_default_bundle(*, progress: bool = True) -> Path:
    """Folder of the default fp32 bundle, exported first when it is missing and the build extra is
    installed (offline, from the weight packages, with a progress bar).

    Raises:
        ModelError: the bundle is missing and cannot be built here; the message names the command
            and the extra, and the way to use a bundle built on another machine.
    """
    root = bundle_dir(DEFAULT_BUNDLE)
    if (root / MANIFEST).is_file():
        return root
    missing = (f"the default bundle is not built ({root / MANIFEST} missing): run `{EXPORT_COMMAND}` on a machine with "
               f"the build extra (`{install_hint(BUILD_EXTRA)}` and the weight packages), or copy a bundle exported "
               "elsewhere and pass bundle=DIR / --bundle DIR")
    entry = _installed_builder()
    if entry is None:
        raise ModelError(missing)
    try:
        builder = entry.load()
        logger.info("default bundle missing at %s: building it offline", root)
        return Path(builder(root, progress=progress))
    except DependencyError as exc:
        raise ModelError(f"{missing} ({exc})") from None
    except ImportError as exc:
        raise ModelError(f"{missing} ({type(exc).__name__}: {exc})") from None

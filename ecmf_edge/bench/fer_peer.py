"""fer's own ``FER`` class, run as the ``fer`` package runs it, without TensorFlow.

``fer/fer.py`` imports TensorFlow at import time, but with ``use_tflite=True`` (its
default) it only uses ``tf.lite.Interpreter`` on the quantised TFLite model it ships.
When TensorFlow is not installed, :func:`load_fer_class` imports ``fer.fer`` with that one
name served by ``ai_edge_litert`` (Google's TFLite runtime, the same interpreter under its
current name) and with stand-ins for its other import-time dependencies that the TFLite
path never calls (``pkg_resources.resource_filename``, ``requests``, Keras's
``load_model``). The stand-ins are removed from ``sys.modules`` again right after the
import; everything else (Haar cascade or MTCNN detection, squaring, offsets, padding,
preprocessing, the interpreter calls) is fer's own code.
"""
from __future__ import annotations

import importlib
import logging
import sys
import types
from typing import Any

from ecmf_edge.errors import DependencyError

__all__ = ["load_fer_class", "fer_runtime_note"]


def _litert_interpreter() -> Any:
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        try:
            from tflite_runtime.interpreter import Interpreter  # type: ignore[no-redef]
        except ImportError:
            raise DependencyError("fer's TFLite model needs TensorFlow or a TFLite runtime: "
                                  "run `pip install ai-edge-litert`") from None
    return Interpreter


def _stand_ins() -> dict[str, types.ModuleType]:
    from ecmf_edge._resources import package_dir

    interpreter = _litert_interpreter()

    def load_model(*args: Any, **kwargs: Any) -> Any:
        raise DependencyError("fer's Keras model needs TensorFlow: run `pip install tensorflow` (use_tflite=True needs it not)")

    def resource_filename(package: str, relative: str) -> str:
        return str(package_dir(package) / relative)

    tf = types.ModuleType("tensorflow")
    tf.lite = types.SimpleNamespace(Interpreter=interpreter)  # type: ignore[attr-defined]
    keras = types.ModuleType("tensorflow.keras")
    models = types.ModuleType("tensorflow.keras.models")
    models.load_model = load_model  # type: ignore[attr-defined]
    keras.models = models  # type: ignore[attr-defined]
    tf.keras = keras  # type: ignore[attr-defined]
    pkg = types.ModuleType("pkg_resources")
    pkg.resource_filename = resource_filename  # type: ignore[attr-defined]
    requests = types.ModuleType("requests")
    return {"tensorflow": tf, "tensorflow.keras": keras, "tensorflow.keras.models": models, "pkg_resources": pkg,
            "requests": requests}


def _missing(name: str) -> bool:
    if name in sys.modules:
        return False
    try:
        return importlib.util.find_spec(name) is None
    except (ImportError, ValueError):
        return True


def fer_runtime_note() -> str:
    """How fer's TFLite model is executed here (for reports)."""
    if not _missing("tensorflow"):
        return "TensorFlow's tf.lite.Interpreter"
    return "ai-edge-litert's Interpreter in place of tf.lite (TensorFlow is not installed)"


def load_fer_class() -> Any:
    """``fer.fer.FER``, importable without TensorFlow (see the module docstring).

    Raises:
        DependencyError: fer, or any TFLite runtime, is not installed.
    """
    if "fer.fer" in sys.modules:
        return sys.modules["fer.fer"].FER
    if importlib.util.find_spec("fer") is None:
        raise DependencyError("fer is not installed: run `pip install --no-deps fer`")
    added = {name: module for name, module in _stand_ins().items() if _missing(name.split(".")[0])}
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    sys.modules.update(added)
    try:
        module = importlib.import_module("fer.fer")
    except ImportError as exc:
        raise DependencyError(f"fer cannot be imported ({exc}): install its missing dependency") from None
    finally:
        for name in added:
            sys.modules.pop(name, None)
        # fer calls logging.basicConfig(level=INFO) at import: undo that side effect.
        root.handlers[:] = handlers
        root.setLevel(level)
        logging.getLogger("fer").setLevel(logging.WARNING)
    return module.FER

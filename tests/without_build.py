"""Run Python code as on a device where only the runtime is installed.

``python tests/without_build.py SCRIPT.py [ARGS...]`` makes torch, transformers and the
package's build and train layers unimportable (as if they were not installed), then runs
``SCRIPT.py`` as ``__main__``. At exit it fails if any of them got imported anyway. With
``ECMF_EDGE_KEEP_BUILD_LAYER=1`` the package's build layer stays importable (a full install of
the package without the build extra's dependencies).
"""
from __future__ import annotations

import importlib.abc
import os
import runpy
import sys

BLOCKED = ("torch", "transformers", "safetensors", "sklearn", "onnxconverter_common") + (
    () if os.environ.get("ECMF_EDGE_KEEP_BUILD_LAYER") == "1" else ("ecmf_edge.build", "ecmf_edge.train"))


class Blocker(importlib.abc.MetaPathFinder):
    """Refuses the blocked packages the way a missing package is refused."""

    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + ".") for b in BLOCKED):
            raise ModuleNotFoundError(f"No module named '{name}' (blocked: runtime-only install)", name=name)
        return None


def main() -> None:
    sys.meta_path.insert(0, Blocker())
    script, sys.argv = sys.argv[1], sys.argv[1:]
    try:
        runpy.run_path(script, run_name="__main__")
    finally:
        loaded = sorted(m for m in sys.modules if any(m == b or m.startswith(b + ".") for b in BLOCKED))
        if loaded:
            print(f"blocked modules were imported: {loaded}", file=sys.stderr)
            sys.exit(3)


if __name__ == "__main__":
    main()

"""The package's three layers import in one direction (runtime <- build <- train), with the command
line and the benchmarks on top, and no cycles between packages.

A static check over every import statement of the package, including imports inside functions:
an import that is only reached lazily still ties a module to what it imports.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

import ecmf_edge

ROOT = Path(ecmf_edge.__file__).parent
# Rank of each layer: a module may import modules of its own rank or lower.
RANKS = {"runtime": 0, "build": 1, "train": 2, "tools": 3}
# Third-party packages only the build and train layers may import.
HEAVY = ("torch", "transformers", "safetensors", "sklearn", "h5py", "onnxconverter_common", "onnx", "skimage")
# The one runtime use of torch: the TensorRT runner may take device memory from PyTorch's CUDA allocator
# when cuda-python is not installed (an optional fallback on GPU machines; the CPU path never reaches it).
ALLOWED = {("ecmf_edge.runtime.tensorrt", "torch")}


def layer_of(module: str) -> str:
    parts = module.split(".")
    if len(parts) > 1 and parts[1] in ("cli", "bench"):
        return "tools"
    if len(parts) > 1 and parts[1] in ("build", "train"):
        return parts[1]
    return "runtime"


def package_of(module: str) -> str:
    """The node of the cycle check: a top-level subpackage or module, or a subpackage of train."""
    parts = module.split(".")
    return ".".join(parts[:3] if len(parts) > 2 and parts[1] == "train" else parts[:2])


def module_name(path: Path) -> str:
    relative = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(relative.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement in a file, relative ones resolved."""
    return imports_in(path.read_text(encoding="utf-8"), module_name(path), path.name == "__init__.py")


def imports_in(source: str, module: str, is_package: bool) -> list[tuple[str, int]]:
    package = module if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((target, node.lineno))
            # `from ecmf_edge.x import y` may name the submodule ecmf_edge.x.y
            found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names
                      if (ROOT.parent / f"{target}.{alias.name}".replace(".", "/")).with_suffix(".py").is_file()]
    return found


MODULES = {module_name(p): p for p in sorted(ROOT.rglob("*.py"))}
EDGES = {name: imports_of(path) for name, path in MODULES.items()}


def test_the_folder_layout_shows_the_layers():
    for folder in ("build", "train", "cli", "runtime", "capture", "vision", "audio", "text", "stream"):
        assert (ROOT / folder / "__init__.py").is_file(), f"ecmf_edge/{folder}/ is missing"
    assert not (ROOT / "export").exists() and not (ROOT / "fusion").exists(), "old build/train folders left at the top"


@pytest.mark.parametrize("lower", ["runtime", "build", "train"])
def test_no_layer_imports_a_higher_one(lower):
    wrong = [f"{name}:{line} imports {target}" for name, targets in EDGES.items() if layer_of(name) == lower
             for target, line in targets
             if target.startswith("ecmf_edge.") and RANKS[layer_of(target)] > RANKS[lower]]
    assert not wrong, "\n".join(wrong)


def test_the_runtime_imports_no_training_framework():
    wrong = [f"{name}:{line} imports {target}" for name, targets in EDGES.items() if layer_of(name) == "runtime"
             for target, line in targets if target.split(".")[0] in HEAVY and (name, target) not in ALLOWED]
    assert not wrong, "\n".join(wrong)


def test_no_import_cycles_between_packages():
    graph: dict[str, set[str]] = defaultdict(set)
    for name, targets in EDGES.items():
        for target, _ in targets:
            if target.startswith("ecmf_edge.") and package_of(target) != package_of(name):
                graph[package_of(name)].add(package_of(target))
    # Tarjan's strongly connected components: any component of more than one package is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    assert not cycles, f"import cycles between packages: {cycles}"


def test_the_check_sees_a_violation():
    """The checker resolves relative and nested imports (so the tests above can fail)."""
    source = "def f():\n    from ..build import bundle\n    from ecmf_edge.train.metrics import evaluate\n"
    targets = [t for t, _ in imports_in(source, "ecmf_edge.vision._layer_probe", False)]
    assert "ecmf_edge.build.bundle" in targets and "ecmf_edge.train.metrics" in targets
    assert layer_of("ecmf_edge.vision._layer_probe") == "runtime"

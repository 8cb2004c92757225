"""The layout of docs/architecture.md, enforced: layers, no import cycles, sizes, type hints.

Every import counts, including the ones inside functions (lazy imports still tie the
two modules together).  The layer table below is the one in docs/architecture.md.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("ts2d_xray", "synth")

#: Layer of each unit (a package or a core module), lowest first.  A module may import
#: from a lower layer, and from its own unit; never from a higher layer or from another
#: unit of its own layer (except inside the core, layer 0, where only cycles are refused).
LAYERS: dict[str, int] = {
    "ts2d_xray.errors": 0, "ts2d_xray.kinds": 0, "ts2d_xray.labels": 0, "ts2d_xray.records": 0,
    "ts2d_xray.image": 0, "ts2d_xray.orientation": 0, "ts2d_xray.measure": 0, "ts2d_xray.projection": 0,
    "ts2d_xray.device": 0, "ts2d_xray.examples": 0, "ts2d_xray.radiographic": 0,
    "ts2d_xray.parallel": 0, "ts2d_xray.sitk_arrays": 0,
    "ts2d_xray.io": 1, "ts2d_xray.xray_randomize": 1,
    "ts2d_xray.dataset": 2, "ts2d_xray.nnunet": 2,
    "ts2d_xray.segment": 3,
    "ts2d_xray.train": 4, "ts2d_xray.evaluate": 4, "synth": 4,
    "ts2d_xray.cli": 5, "synth.cli": 5,
}
#: Imports across units of one layer that the architecture allows, besides the core's.
ALLOWED_SIDEWAYS: set[tuple[str, str]] = {
    ("ts2d_xray.cli", "synth.cli"),  # `ts2d-xray synth ...` hands over to synth's commands (lazily)
    ("synth.cli", "ts2d_xray.cli"),  # ...which share the argument types of ts2d_xray.cli.argtypes
}
#: synth is generated data, not an application: it stays on the core, I/O and data set layers.
SYNTH_MAX_LAYER = 2
FACADE = "ts2d_xray"  # the public API re-exports from every layer

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
MIN_TYPED_PARAMETERS = 0.95
MIN_TYPED_RETURNS = 0.90


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join(parts)] = path
    return found


MODULES = _modules()
TREES = {name: ast.parse(path.read_text(), filename=str(path)) for name, path in MODULES.items()}


def _resolve(importer: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = importer if MODULES[importer].name == "__init__.py" else importer.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(name: str) -> set[str]:
    """The project modules that module ``name`` imports, anywhere in it."""
    out = set()
    for node in ast.walk(TREES[name]):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(name, node)
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in MODULES:  # "import a.b.c" of a name inside a module
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


GRAPH = {name: _imports(name) for name in MODULES}


def _unit(module: str) -> str:
    matches = [u for u in LAYERS if module == u or module.startswith(u + ".")]
    if not matches:
        raise AssertionError(f"{module} is in no layer of docs/architecture.md (add it to LAYERS and the doc)")
    return max(matches, key=len)


def test_every_module_has_a_layer():
    for module in MODULES:
        if module not in (FACADE,):
            _unit(module)


def test_no_module_imports_from_a_layer_above_or_beside_it():
    wrong = []
    for importer, targets in GRAPH.items():
        if importer == FACADE:
            continue
        source = _unit(importer)
        for target in targets:
            if target == FACADE:
                wrong.append(f"{importer} -> {target} (the facade is for users; import the module itself)")
                continue
            dest = _unit(target)
            if dest == source or (LAYERS[source] == LAYERS[dest] == 0) or (source, dest) in ALLOWED_SIDEWAYS:
                continue
            limit = SYNTH_MAX_LAYER + 1 if source == "synth" else LAYERS[source]
            if LAYERS[dest] >= limit:
                wrong.append(f"{importer} (layer {LAYERS[source]}) -> {target} (layer {LAYERS[dest]})")
    assert not wrong, "imports against docs/architecture.md:\n" + "\n".join(sorted(wrong))


def test_no_import_cycles():
    # Tarjan's strongly connected components over every import (lazy ones too).
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in GRAPH[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for v in GRAPH:
        if v not in index:
            visit(v)
    assert not cycles, f"import cycles: {cycles}"


def test_modules_and_functions_stay_small():
    too_long = [f"{MODULES[m].relative_to(ROOT)}: {n} lines" for m in MODULES
                if (n := len(MODULES[m].read_text().splitlines())) > MAX_MODULE_LINES]
    for module, tree in TREES.items():
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    too_long.append(f"{MODULES[module].relative_to(ROOT)}:{node.lineno} {node.name}: {length} lines")
    assert not too_long, "\n".join(too_long)


def _typing_counts() -> tuple[int, int, int, int, list[str]]:
    params = typed_params = returns = typed_returns = 0
    untyped = []
    for module, tree in TREES.items():
        for node in ast.walk(tree):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            where = f"{MODULES[module].relative_to(ROOT)}:{node.lineno} {node.name}"
            a = node.args
            for arg in [*a.posonlyargs, *a.args, *a.kwonlyargs, *filter(None, (a.vararg, a.kwarg))]:
                if arg.arg in ("self", "cls"):
                    continue
                params += 1
                typed_params += arg.annotation is not None
                if arg.annotation is None:
                    untyped.append(f"{where}({arg.arg})")
            if node.name != "__init__":
                returns += 1
                typed_returns += node.returns is not None
                if node.returns is None:
                    untyped.append(f"{where} -> ?")
    return params, typed_params, returns, typed_returns, untyped


def test_parameters_and_returns_are_typed():
    params, typed_params, returns, typed_returns, untyped = _typing_counts()
    detail = "\n".join(untyped[:40])
    assert typed_params / params >= MIN_TYPED_PARAMETERS, f"{typed_params}/{params} parameters typed:\n{detail}"
    assert typed_returns / returns >= MIN_TYPED_RETURNS, f"{typed_returns}/{returns} returns typed:\n{detail}"


@pytest.mark.parametrize("idea, home", [
    ("class Orientation", "ts2d_xray/orientation.py"),
    ("def atomic_paths", "ts2d_xray/io/files.py"),
    ("def read_json", "ts2d_xray/io/files.py"),
    ("def write_json", "ts2d_xray/io/files.py"),
    ("def json_default", "ts2d_xray/io/files.py"),
    ("def record_from_dict", "ts2d_xray/records.py"),
    ("def format_suffix", "ts2d_xray/kinds.py"),
    ("def build_network", "ts2d_xray/nnunet/network.py"),
    ("def read_checkpoint", "ts2d_xray/nnunet/checkpoint.py"),
    ("def normalize", "ts2d_xray/nnunet/normalize.py"),
    ("def resolve_device", "ts2d_xray/device.py"),
    ("def run_dask", "ts2d_xray/parallel.py"),
    ("def run_pool", "ts2d_xray/parallel.py"),
])
def test_each_idea_has_one_home(idea, home):
    """The idea is defined once, public or private (``_name``), at any indentation."""
    kind, name = idea.split()
    pattern = re.compile(rf"^\s*{kind} _?{name}\b", re.M)
    homes = [str(p.relative_to(ROOT)) for p in MODULES.values() if pattern.search(p.read_text())]
    assert homes == [home], f"{idea!r} is defined in {homes}; its one home is {home}"

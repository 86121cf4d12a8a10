"""The package's layout: floors that import only downwards, no circle, no private name across modules,
imports at the top, modules of a few hundred lines, docstring examples that run.

The floors, lowest first (README: "The method in one screen, and where each step lives"):

    foundation   the package root, errors, extras (the optional parts), files, config (PadimConfig, Geometry),
                 progress, measure, paper, markdown
    datasets     padim_utils.datasets.*: images in, at one Geometry
    method       backbones, reduction, gaussian, scoring, metrics (+ metric_inputs), distributed, model, export
    figures      plots
    experiments  padim_utils.experiments.*: benchmark, feature cache, ablations, STC, reproduction
    course       padim_utils.course.* (notebook helpers, exercises, book) and the cli
"""

from __future__ import annotations

import ast
import doctest
import importlib
import pathlib

import pytest

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / "padim_utils"
FLOORS = {
    "foundation": ("", "errors", "extras", "files", "config", "progress", "measure", "paper", "markdown"),
    "datasets": ("datasets",),
    "method": ("backbones", "reduction", "gaussian", "scoring", "metrics", "metric_inputs", "distributed", "model",
               "export"),
    "figures": ("plots",),
    "experiments": ("experiments",),
    "course": ("course", "cli"),
}
#: Third-party modules a function may import where it needs them: heavy, and needed only by one feature
#: (ONNX validation, video, widgets, the book build, one family of backbones).
OPTIONAL = {"onnxruntime", "onnx", "av", "ipywidgets", "IPython", "nbformat", "nbclient", "nbconvert", "jupytext",
            "jupyter_server_mathjax", "timm", "torchvision", "sklearn", "anomalib"}
MAX_LINES = 600


def _modules() -> dict[str, pathlib.Path]:
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def _floor(module: str) -> int:
    for rank, (_, prefixes) in enumerate(FLOORS.items()):
        for prefix in prefixes:
            if module == prefix or (prefix and module.startswith(prefix + ".")):
                return rank
    raise AssertionError(f"padim_utils.{module} stands on no floor: add it to FLOORS")


def _internal_imports(module: str) -> list[tuple[str, int, bool]]:
    """(imported module, line, inside a function) for each import of a padim_utils module by `module`."""
    path = MODULES[module]
    package = module.split(".") if path.name == "__init__.py" else module.split(".")[:-1]
    if module == "":
        package = []
    tree = ast.parse(path.read_text())
    inside = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))
              for n in ast.walk(f)}
    out = []
    for node in ast.walk(tree):
        targets = []
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
            elif (node.module or "").split(".")[0] == "padim_utils":
                base = node.module.removeprefix("padim_utils").lstrip(".")
            else:
                continue
            for alias in node.names:
                name = f"{base}.{alias.name}".lstrip(".")
                targets.append(name if name in MODULES else base)
        elif isinstance(node, ast.Import):
            targets = [a.name.removeprefix("padim_utils").lstrip(".") for a in node.names
                       if a.name.split(".")[0] == "padim_utils"]
        out += [(t, node.lineno, id(node) in inside) for t in targets if t != module]
    return out


def test_every_module_stands_on_a_floor():
    assert len(MODULES) > 30
    for module in MODULES:
        _floor(module)


def test_no_import_runs_up_a_floor():
    ups = [f"padim_utils.{m}:{line} imports padim_utils.{t} ({list(FLOORS)[_floor(t)]} is above "
           f"{list(FLOORS)[_floor(m)]})"
           for m in MODULES for t, line, _ in _internal_imports(m) if _floor(t) > _floor(m)]
    assert not ups, "\n".join(ups)


def test_no_import_circle():
    graph = {m: {t for t, _, _ in _internal_imports(m)} for m in MODULES}
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(m: str) -> list[str] | None:
        state[m] = 1
        stack.append(m)
        for t in sorted(graph[m]):
            if state.get(t) == 1:
                return stack[stack.index(t):] + [t]
            if t not in state and (found := visit(t)):
                return found
        state[m] = 2
        stack.pop()
        return None

    for m in MODULES:
        if m not in state and (circle := visit(m)):
            pytest.fail("import circle: " + " -> ".join(circle))


def _defined_private_names(tree: ast.AST) -> set[str]:
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return {n for n in names if n.startswith("_") and not n.startswith("__")}


def test_no_private_name_is_used_outside_its_module():
    found = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        own = _defined_private_names(tree)
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("padim_utils")):
                found += [f"{path.name}:{node.lineno} imports {a.name}" for a in node.names
                          if a.name.startswith("_") and not a.name.startswith("__")]
            elif (isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__")
                  and node.attr not in own):
                found.append(f"padim_utils.{module}:{node.lineno} uses .{node.attr}")
    assert not found, "\n".join(found)


def test_imports_stand_at_the_top_but_optional_heavy_ones():
    inner = []
    for module, path in MODULES.items():
        tree = ast.parse(path.read_text())
        for f in ast.walk(tree):
            if not isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(f):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    names = ["padim_utils" if node.level else node.module]
                else:
                    continue
                inner += [f"padim_utils.{module}:{node.lineno} imports {n} inside {f.name}()" for n in names
                          if n.split(".")[0] not in OPTIONAL]
    assert not inner, "\n".join(sorted(set(inner)))


def test_no_name_a_package_exports_hides_one_of_its_modules():
    """`from padim_utils.experiments import reproduction as rp` must give the module, never a function."""
    hidden = []
    for package, path in MODULES.items():
        if path.name != "__init__.py":
            continue
        mod = importlib.import_module(f"padim_utils.{package}".rstrip("."))
        for child in (m for m in MODULES if m.rpartition(".")[0] == package and m != package):
            leaf = child.rpartition(".")[2]
            value = getattr(mod, leaf, None)
            if value is not None and value is not importlib.import_module(f"padim_utils.{child}"):
                hidden.append(f"padim_utils.{package}.{leaf} is {value!r}, not the module")
    assert not hidden, "\n".join(hidden)


def test_modules_are_a_few_hundred_lines():
    long = {m: n for m, p in MODULES.items() if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert not long, f"modules over {MAX_LINES} lines: {long}"


def test_docstring_examples_run():
    """Every `>>>` example in the package runs as written; the method's steps each show at least one."""
    counts = {}
    for module in MODULES:
        mod = importlib.import_module(f"padim_utils.{module}".rstrip("."))
        result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, report=False)
        assert result.failed == 0, f"padim_utils.{module}: {result.failed} docstring example(s) fail"
        counts[module] = result.attempted
    missing = [m for m in FLOORS["method"] + ("config",) if counts[m] == 0]
    assert not missing, f"steps of the method without a docstring example: {missing}"
    assert sum(counts.values()) >= 40


def test_the_layout_checks_can_fail(tmp_path, monkeypatch):
    """The checks above find a back-arrow, a circle and a private import when one is written."""
    bad = {"datasets.bad": "from ..experiments.benchmark import run_benchmark\nfrom ..config import _whole\n"}
    monkeypatch.setitem(MODULES, "datasets.bad", tmp_path / "bad.py")
    (tmp_path / "bad.py").write_text(bad["datasets.bad"])
    with pytest.raises(AssertionError, match="experiments is above datasets"):
        test_no_import_runs_up_a_floor()
    with pytest.raises(AssertionError, match="imports _whole"):
        test_no_private_name_is_used_outside_its_module()
    (tmp_path / "bad.py").write_text("from .. import model\n")
    monkeypatch.setitem(MODULES, "backbones", tmp_path / "bad2.py")
    (tmp_path / "bad2.py").write_text("from .datasets import bad\n")
    with pytest.raises(pytest.fail.Exception, match="import circle"):
        test_no_import_circle()

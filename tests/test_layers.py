"""The folders of ``proxima/`` are layers, and imports go one way only.

Every module under ``proxima/`` is parsed (never imported) and each of its
imports -- at module level, inside functions, and under ``if TYPE_CHECKING:``
-- is resolved to the module it names and checked against the layer table
below. A new module is covered as soon as it exists; a new top-level folder
fails :func:`test_every_module_belongs_to_a_layer` until it is given a layer.

The layers, lowest first (a layer may import its own modules and those it
lists in ``MAY_IMPORT``; see docs/design.md):

- ``model`` (``_model/``): plain data; no anyio, no asyncio, no trio;
- ``graph`` (``_graph.py``): validation and the plan;
- ``executors``, ``store``, ``observe``: siblings that never import each
  other, the engine or the facade (executors need the model only);
- ``engine`` (``_engine/``): the run; the only part of the library, with the
  executors, that opens task groups (the command line, an application on top,
  opens one for its Ctrl-C watcher);
- ``facade`` (``_facade/``): ``Pipeline``, ``PipelineBuilder``, ``with_retry``;
- ``api`` (``proxima/data/pipeline/__init__.py``): the public re-exports;
- ``cli`` (``proxima/cli/``, ``proxima/__main__.py``): on top of everything.

``proxima/__init__.py`` and ``proxima/data/__init__.py`` (``root``) import
nothing of the library; anything may import them.
"""

from __future__ import annotations

import ast
import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import attrs
import pytest

import proxima

ROOT = Path(proxima.__file__).parent
PACKAGE = "proxima.data.pipeline"

#: Folder (or module) right below ``proxima/data/pipeline/`` -> its layer.
_PIPELINE_LAYERS = {
    "_model": "model",
    "_graph": "graph",
    "executors": "executors",
    "store": "store",
    "observe": "observe",
    "_engine": "engine",
    "_facade": "facade",
}

_BELOW_FACADE = {"model", "graph", "executors", "store", "observe", "engine", "facade"}

#: The layers each layer may import, besides ``root`` (everyone may).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "root": frozenset({"root"}),
    "model": frozenset({"model"}),
    "graph": frozenset({"model", "graph"}),
    "executors": frozenset({"model", "executors"}),
    "store": frozenset({"model", "graph", "store"}),
    # observe listens to events and draws results; the engine only emits events
    # (model data), so nothing below the facade imports observe.
    "observe": frozenset({"model", "graph", "observe"}),
    "engine": frozenset({"model", "graph", "executors", "store", "engine"}),
    "facade": frozenset(_BELOW_FACADE),
    "api": frozenset(_BELOW_FACADE | {"api"}),
    "cli": frozenset(_BELOW_FACADE | {"api", "cli"}),
}

#: Imports that go the wrong way on purpose: (importer, imported, function) -> why.
#: Each must stay lazy (inside that function), and each must still exist.
KNOWN_EXCEPTIONS: dict[tuple[str, str, str], str] = {
    ("_model.results", "observe.render", "to_mermaid"): (
        "PipelineResult.to_mermaid() is a convenience method; the renderer is "
        "loaded only when it is called, never when the model is imported"
    ),
    ("_model.results", "observe.report", "to_html"): (
        "PipelineResult.to_html() is a convenience method; the report is "
        "loaded only when it is called, never when the model is imported"
    ),
}

#: ``if TYPE_CHECKING:`` imports that go the wrong way: (importer, imported) -> why.
#: These never run; they are listed so that each one is a decision, not a slip.
KNOWN_TYPE_ONLY_EXCEPTIONS: dict[tuple[str, str], str] = {
    ("_model.stage", "_engine.context"): (
        "the Handler and CleanupHandler aliases name the public PipelineContext "
        "type in their signatures; the context itself lives in the engine "
        "because it hands calls over to the event loop"
    ),
}

#: Top-level names a model module may not import: it is plain data.
_MODEL_FORBIDDEN = {"anyio", "asyncio", "sniffio", "trio"}
#: Where task groups may be opened (the run, executors that run handlers, and the
#: command line, whose Ctrl-C watcher runs beside ``execute()``: R14.3).
_TASK_GROUP_LAYERS = {"engine", "executors", "cli"}
_TASK_GROUP_CALLS = {"create_task_group", "open_nursery"}


# -- reading the modules --------------------------------------------------------------------------


@attrs.frozen
class Import:
    """One import statement's target, resolved to an absolute module name."""

    importer: str
    target: str
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``
    function: str | None  # the enclosing function, None at module level


@attrs.frozen
class Module:
    name: str
    path: Path
    is_package: bool
    tree: ast.Module


def module_name(path: Path, root: Path = ROOT) -> str:
    """``proxima/data/pipeline/_engine/run.py`` -> ``proxima.data.pipeline._engine.run``."""
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def library_modules(root: Path = ROOT) -> list[Module]:
    """Every module of the library, parsed."""
    found = []
    for path in sorted(root.rglob("*.py")):
        if "__pycache__" in path.parts or any(p.startswith(".") for p in path.parts):
            continue
        found.append(
            Module(
                name=module_name(path, root),
                path=path,
                is_package=path.name == "__init__.py",
                tree=ast.parse(path.read_text(encoding="utf-8"), filename=str(path)),
            )
        )
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _resolve_base(module: Module, node: ast.ImportFrom) -> str:
    """The absolute module a ``from ... import`` names, relative dots resolved."""
    if node.level == 0:
        return node.module or ""
    package = module.name.split(".")
    if not module.is_package:
        package.pop()
    if node.level > 1:
        package = package[: len(package) - (node.level - 1)]
    return ".".join([*package, *([node.module] if node.module else [])])


def imports_of(module: Module, known: set[str]) -> Iterator[Import]:
    """Every import in ``module``, wherever it is written. ``from x import y``
    targets the submodule ``x.y`` when that is a module of the library."""

    def visit(node: ast.AST, type_only: bool, function: str | None) -> Iterator[Import]:
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Import(module.name, alias.name, node.lineno, type_only, function)
            return
        if isinstance(node, ast.ImportFrom):
            base = _resolve_base(module, node)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                target = sub if sub in known else base
                yield Import(module.name, target, node.lineno, type_only, function)
            return
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.body:
                yield from visit(statement, True, function)
            for statement in node.orelse:
                yield from visit(statement, type_only, function)
            return
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            function = node.name
        for child in ast.iter_child_nodes(node):
            yield from visit(child, type_only, function)

    yield from visit(module.tree, False, None)


# -- the layers -----------------------------------------------------------------------------------


def layer_of(name: str) -> str | None:
    """The layer of a library module, None for modules outside the library
    (the standard library, anyio, ...) and for library modules in no layer."""
    parts = name.split(".")
    if parts[0] != "proxima":
        return None
    if name in ("proxima", "proxima.data"):
        return "root"
    if name == "proxima.__main__" or parts[:2] == ["proxima", "cli"]:
        return "cli"
    if name == PACKAGE:
        return "api"
    if parts[:3] == PACKAGE.split(".") and len(parts) > 3:
        return _PIPELINE_LAYERS.get(parts[3])
    return None


def short(name: str) -> str:
    """A module name as the messages show it: relative to the package."""
    return name.removeprefix(f"{PACKAGE}.")


def shown_path(module: Module) -> str:
    """``_engine/run.py`` for modules of the package, ``proxima/cli/app.py`` otherwise."""
    path = module.name.replace(".", "/") + ("/__init__.py" if module.is_package else ".py")
    if module.name.startswith(f"{PACKAGE}."):
        return path.removeprefix(f"{PACKAGE.replace('.', '/')}/")
    return path


def _may_import(layer: str, target_layer: str) -> bool:
    return target_layer == "root" or target_layer in MAY_IMPORT[layer]


def _hint(layer: str) -> str:
    allowed = ", ".join(sorted(MAY_IMPORT[layer] - {layer, "root"})) or "nothing of the library"
    return f"{layer} may import: {allowed}"


def wrong_way(modules: Iterable[Module], type_only: bool) -> tuple[list[str], set[object]]:
    """Messages for the imports that go the wrong way (the run-time ones, or
    the ``TYPE_CHECKING`` ones), and the known exceptions that were used."""
    modules = list(modules)
    known = {m.name for m in modules}
    problems: list[str] = []
    used: set[object] = set()
    for module in modules:
        layer = layer_of(module.name)
        if layer is None:
            continue
        for imp in imports_of(module, known):
            target_layer = layer_of(imp.target)
            if imp.type_only != type_only or target_layer is None:
                continue
            if _may_import(layer, target_layer):
                continue
            key: object
            if type_only:
                key = (short(module.name), short(imp.target))
                if key in KNOWN_TYPE_ONLY_EXCEPTIONS:
                    used.add(key)
                    continue
            else:
                key = (short(module.name), short(imp.target), imp.function)
                if key in KNOWN_EXCEPTIONS:
                    used.add(key)
                    continue
            where = "under TYPE_CHECKING " if type_only else ""
            problems.append(
                f"{shown_path(module)} imports {short(imp.target)} {where}"
                f"(line {imp.line}): {layer} may not import {target_layer} ({_hint(layer)})"
            )
    return problems, used


def task_group_openers(modules: Iterable[Module]) -> list[str]:
    """Where a task group is opened outside the engine, the executors and the CLI."""
    problems = []
    for module in modules:
        if layer_of(module.name) in _TASK_GROUP_LAYERS:
            continue
        for node in ast.walk(module.tree):
            name = None
            if isinstance(node, ast.Attribute):
                name = node.attr
            elif isinstance(node, ast.Name):
                name = node.id
            elif isinstance(node, ast.alias):
                name = node.name.rsplit(".", 1)[-1]
            if name in _TASK_GROUP_CALLS:
                line = getattr(node, "lineno", "?")
                problems.append(
                    f"{shown_path(module)} uses {name} (line {line}): only the engine, "
                    "the executors and the command line open task groups"
                )
    return problems


def model_backend_imports(modules: Iterable[Module]) -> list[str]:
    """Imports of anyio (or a backend) in the model, wherever they are written."""
    modules = list(modules)
    known = {m.name for m in modules}
    problems = []
    for module in modules:
        if layer_of(module.name) != "model":
            continue
        for imp in imports_of(module, known):
            top = imp.target.split(".")[0]
            if top in _MODEL_FORBIDDEN:
                problems.append(
                    f"{shown_path(module)} imports {imp.target} (line {imp.line}): "
                    "the model is plain data and may not import anyio or a backend"
                )
    return problems


def _report(problems: list[str]) -> str:
    return "\n".join(["imports that go the wrong way:", *problems])


# -- the checks on the real library ---------------------------------------------------------------

MODULES = library_modules()


def test_every_module_belongs_to_a_layer() -> None:
    homeless = [shown_path(m) for m in MODULES if layer_of(m.name) is None]
    assert not homeless, (
        f"modules in no layer: {homeless}; give their folder a layer in tests/test_layers.py"
    )


def test_the_walk_sees_every_layer() -> None:
    """The walk reads the real tree: each layer that exists today has modules."""
    seen = {layer_of(m.name) for m in MODULES}
    assert {"root", "model", "graph", "observe", "engine", "facade", "api"} <= seen


def test_imports_go_one_way() -> None:
    problems, _ = wrong_way(MODULES, type_only=False)
    assert not problems, _report(problems)


def test_type_checking_imports_go_one_way() -> None:
    problems, _ = wrong_way(MODULES, type_only=True)
    assert not problems, _report(problems)


def test_known_exceptions_still_exist() -> None:
    """An exception that no longer happens is removed from the list, so the
    list never allows more than the code needs."""
    _, used = wrong_way(MODULES, type_only=False)
    _, used_type_only = wrong_way(MODULES, type_only=True)
    stale = (set(KNOWN_EXCEPTIONS) - used) | (set(KNOWN_TYPE_ONLY_EXCEPTIONS) - used_type_only)
    assert not stale, f"remove these from tests/test_layers.py, they no longer occur: {stale}"


def test_the_model_imports_no_anyio() -> None:
    problems = model_backend_imports(MODULES)
    assert not problems, "\n".join(problems)


def test_only_the_engine_and_executors_open_task_groups() -> None:
    problems = task_group_openers(MODULES)
    assert not problems, "\n".join(problems)


# -- the checker itself, on made-up trees ---------------------------------------------------------


def _tree(tmp_path: Path, files: dict[str, str]) -> list[Module]:
    """A fake ``proxima`` package holding ``files`` (paths below proxima/)."""
    root = tmp_path / "proxima"
    for rel, source in {
        "__init__.py": "",
        "data/__init__.py": "",
        "data/pipeline/__init__.py": "",
        **files,
    }.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source, encoding="utf-8")
    return library_modules(root)


def _wrong_way(modules: list[Module], type_only: bool = False) -> list[str]:
    return wrong_way(modules, type_only)[0]


def test_checker_reports_an_engine_module_importing_the_facade() -> None:
    modules = [m for m in MODULES if m.name == f"{PACKAGE}._engine.run"]
    assert modules, "the engine's run module moved: point this test at an engine module"
    fake = attrs.evolve(modules[0], tree=ast.parse("from .._facade.pipeline import Pipeline\n"))
    problems, _ = wrong_way([*MODULES, fake], type_only=False)
    assert problems == [
        "_engine/run.py imports _facade.pipeline (line 1): engine may not import facade "
        "(engine may import: executors, graph, model, store)"
    ]


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        pytest.param(
            {
                "data/pipeline/_model/x.py": "def f():\n    from ..observe import render\n",
                "data/pipeline/observe/render.py": "",
            },
            [
                "_model/x.py imports observe.render (line 2): model may not import observe "
                "(model may import: nothing of the library)"
            ],
            id="relative-two-levels-inside-a-function",
        ),
        pytest.param(
            {"data/pipeline/store/x.py": "import proxima.data.pipeline\n"},
            [
                "store/x.py imports proxima.data.pipeline (line 1): store may not import api "
                "(store may import: graph, model)"
            ],
            id="absolute-import-of-the-package",
        ),
        pytest.param(
            {
                "data/pipeline/executors/__init__.py": "from ..store import base\n",
                "data/pipeline/store/__init__.py": "",
                "data/pipeline/store/base.py": "",
            },
            [
                "executors/__init__.py imports store.base (line 1): executors may not import "
                "store (executors may import: model)"
            ],
            id="siblings-and-a-submodule-named-by-from-import",
        ),
        pytest.param(
            {
                "data/pipeline/_engine/a.py": "from . import b\nfrom .._graph import plan\n",
                "data/pipeline/_engine/b.py": "from .._model import stage\nimport anyio\n",
                "data/pipeline/_graph.py": "",
                "data/pipeline/_model/stage.py": "",
                "cli/__init__.py": "from proxima.data.pipeline import Pipeline\n",
                "__main__.py": "from proxima.cli import main\nimport proxima\n",
            },
            [],
            id="own-and-lower-layers-are-fine",
        ),
    ],
)
def test_checker_resolves_relative_and_absolute_imports(
    tmp_path: Path, files: dict[str, str], expected: list[str]
) -> None:
    assert _wrong_way(_tree(tmp_path, files)) == expected


def test_checker_sees_type_checking_imports_apart(tmp_path: Path) -> None:
    source = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .._facade import p\n"
    modules = _tree(
        tmp_path,
        {"data/pipeline/observe/x.py": source, "data/pipeline/_facade/p.py": ""},
    )
    assert _wrong_way(modules, type_only=False) == []
    assert _wrong_way(modules, type_only=True) == [
        "observe/x.py imports _facade.p under TYPE_CHECKING (line 3): observe may not import "
        "facade (observe may import: graph, model)"
    ]


def test_checker_finds_anyio_in_the_model_and_task_groups_elsewhere(tmp_path: Path) -> None:
    modules = _tree(
        tmp_path,
        {
            "data/pipeline/_model/x.py": "def f():\n    import anyio.abc\n",
            "data/pipeline/_facade/y.py": "import anyio\nasync def g():\n"
            "    async with anyio.create_task_group():\n        pass\n",
            "data/pipeline/_engine/z.py": "from anyio import create_task_group\n",
        },
    )
    assert model_backend_imports(modules) == [
        "_model/x.py imports anyio.abc (line 2): the model is plain data and may not "
        "import anyio or a backend"
    ]
    assert task_group_openers(modules) == [
        "_facade/y.py uses create_task_group (line 3): only the engine, the executors and "
        "the command line open task groups"
    ]


def test_every_layer_may_import_only_lower_layers() -> None:
    """The table itself: no layer may import one above it, and the three
    siblings never import each other."""
    order = ["root", "model", "graph", "executors", "engine", "facade", "api", "cli"]
    for lower, higher in itertools.pairwise(order):
        assert higher not in MAY_IMPORT[lower], f"{lower} may import {higher}"
    for a in ("executors", "store", "observe"):
        for b in ("executors", "store", "observe", "engine", "facade", "api", "cli"):
            assert a == b or b not in MAY_IMPORT[a], f"{a} may import {b}"

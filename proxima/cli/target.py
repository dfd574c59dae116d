"""Turn a TARGET string into a :class:`Pipeline` (R14.1).

A TARGET is ``package.module:name`` or ``path/to/file.py:name``; ``name``
(dotted names reach into the object: ``module:flows.nightly``) is a
``Pipeline``, a ``PipelineBuilder``, or a callable taking no arguments that
returns one of those. Without ``:name`` the module must hold exactly one
``Pipeline`` or ``PipelineBuilder``, which is then used.

A file is imported the way ``python path/to/file.py`` would see it: its
folder goes first on ``sys.path`` (so its sibling modules import), and it is
registered under its own name (``demo`` for ``examples/demo.py``) so that its
functions pickle by reference into worker processes, which find the module
on the same ``sys.path``. Only its ``if __name__ == "__main__"`` block does
not run.

Every way this can go wrong raises :class:`UsageError` with a one-line
message naming the target.
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .errors import UsageError, describe_exception

if TYPE_CHECKING:
    from proxima.data.pipeline import Pipeline

__all__ = ["load_target", "split_target"]

_FORM = "expected module:name or path/to/file.py:name"


def split_target(target: str) -> tuple[str, str | None]:
    """``"a/b.py:p"`` -> ``("a/b.py", "p")``; no ``:name`` -> ``(target, None)``.

    The last colon splits, so a Windows drive letter (``C:\\x.py``) stays
    part of the path.
    """
    where, sep, name = target.rpartition(":")
    if not sep or not name or any(c in name for c in "/\\") or name.endswith(".py"):
        return target, None
    if not where:
        raise UsageError(f"invalid target {target!r}: {_FORM}")
    return where, name


def load_target(target: str) -> Pipeline:
    """The pipeline that ``target`` names, its graph validated;
    :class:`UsageError` otherwise."""
    from proxima.data.pipeline import PipelineValidationError

    try:
        pipeline = _load(target)
        pipeline.validate()
    except PipelineValidationError as exc:
        raise UsageError(f"invalid pipeline {target!r}: {exc}") from None
    return pipeline


def _load(target: str) -> Pipeline:
    where, name = split_target(target.strip())
    if not where:
        raise UsageError(f"invalid target {target!r}: {_FORM}")
    module = _import(where)
    if name is None:
        return _only_pipeline(module, where)
    return _as_pipeline(_attribute(module, name, target), target, _file_of(module))


def _is_path(where: str) -> bool:
    return where.endswith(".py") or "/" in where or os.sep in where


def _import(where: str) -> ModuleType:
    if _is_path(where):
        return _import_file(Path(where))
    if not all(part.isidentifier() for part in where.split(".")):
        raise UsageError(f"invalid target {where!r}: {_FORM}")
    # Like `python -m`, the working directory's modules are importable.
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name is not None and where.startswith(exc.name):
            raise UsageError(f"cannot import {where!r}: no module named {exc.name!r}") from None
        raise UsageError(f"cannot import {where!r}: {describe_exception(exc)}") from None
    except Exception as exc:
        origin = _origin(where)
        raise UsageError(f"cannot import {where!r}: {describe_exception(exc, origin)}") from None


def _origin(module_name: str) -> str | None:
    module = sys.modules.get(module_name)
    return getattr(module, "__file__", None)


def _import_file(path: Path) -> ModuleType:
    if not path.is_file():
        raise UsageError(f"no such file: {str(path)!r}")
    if path.suffix != ".py":
        raise UsageError(f"not a Python file: {str(path)!r} ({_FORM})")
    resolved = path.resolve()
    folder = str(resolved.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    name = _module_name(resolved)
    spec = importlib.util.spec_from_file_location(name, resolved)
    if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
        raise UsageError(f"cannot import {str(path)!r}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as exc:
        del sys.modules[name]
        raise UsageError(
            f"cannot import {str(path)!r}: {describe_exception(exc, str(resolved))}"
        ) from None
    return module


def _module_name(path: Path) -> str:
    """The file's own name when importing that name finds this very file;
    otherwise (a name taken by another module, or not an identifier) a
    private one, so nothing already imported is shadowed."""
    stem = path.stem
    if stem.isidentifier():
        try:
            spec = importlib.util.find_spec(stem)
        except (ImportError, ValueError):
            spec = None
        if spec is not None and spec.origin and Path(spec.origin).resolve() == path:
            return stem
    return f"_proxima_target_{abs(hash(str(path))):x}"


def _file_of(module: ModuleType) -> str | None:
    return getattr(module, "__file__", None)


def _attribute(module: ModuleType, name: str, target: str) -> Any:
    value: Any = module
    for part in name.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            known = ", ".join(_candidates(module)) or "none"
            raise UsageError(
                f"{target!r}: {module.__name__!r} has no attribute {name!r}"
                f" (pipelines and builders there: {known})"
            ) from None
    return value


def _candidates(module: ModuleType) -> list[str]:
    from proxima.data.pipeline import Pipeline, PipelineBuilder

    return [
        attr
        for attr, value in vars(module).items()
        if isinstance(value, (Pipeline, PipelineBuilder)) and not attr.startswith("_")
    ]


def _only_pipeline(module: ModuleType, where: str) -> Pipeline:
    found = _candidates(module)
    if len(found) == 1:
        return _as_pipeline(getattr(module, found[0]), f"{where}:{found[0]}", _file_of(module))
    if not found:
        raise UsageError(
            f"{where!r} holds no Pipeline or PipelineBuilder: name one, {where}:NAME"
            " (a callable returning one works too)"
        )
    options = " or ".join(f"{where}:{attr}" for attr in found)
    raise UsageError(f"{where!r} holds several pipelines: name one, {options}")


def _as_pipeline(value: Any, target: str, user_file: str | None) -> Pipeline:
    from proxima.data.pipeline import Pipeline, PipelineBuilder, PipelineValidationError

    if isinstance(value, (Pipeline, PipelineBuilder)):
        return value if isinstance(value, Pipeline) else value.build()
    if not callable(value):
        raise UsageError(
            f"{target!r} is a {type(value).__name__}, not a Pipeline, a PipelineBuilder"
            " or a callable returning one"
        )
    _check_no_arguments(value, target)
    try:
        made = value()
    except PipelineValidationError:
        raise
    except Exception as exc:
        raise UsageError(
            f"calling {target!r} failed: {describe_exception(exc, user_file)}"
        ) from None
    if isinstance(made, PipelineBuilder):
        return made.build()
    if not isinstance(made, Pipeline):
        raise UsageError(
            f"{target!r} returned a {type(made).__name__}, not a Pipeline or a PipelineBuilder"
        )
    return made


def _check_no_arguments(value: Any, target: str) -> None:
    try:
        signature = inspect.signature(value)
    except (TypeError, ValueError):  # builtins without a signature: just try the call
        return
    required = [
        p.name
        for p in signature.parameters.values()
        if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    ]
    if required:
        raise UsageError(
            f"{target!r} needs arguments ({', '.join(required)}); the command line calls it"
            " with none"
        )

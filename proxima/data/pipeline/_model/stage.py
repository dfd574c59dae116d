"""Stage definitions: :class:`Stage`, :func:`create_stage` and ``@stage``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, overload

import attrs

from . import validators as v
from .config import RetryConfig
from .text import safe_repr

if TYPE_CHECKING:
    from .._engine.context import PipelineContext

__all__ = ["CleanupHandler", "Handler", "Stage", "StrTuple", "create_stage", "stage"]

#: ``handler(ctx, input)``; may return a value or an awaitable of one.
Handler = Callable[["PipelineContext", Any], Any]
#: ``cleanup(ctx)``; may return ``None`` or an awaitable.
CleanupHandler = Callable[["PipelineContext"], Any]


class StrTuple(tuple[str, ...]):
    """An immutable tuple of ids or tags that also equals a list of the same
    items, so ``stage.dependencies == ["load"]`` holds for a stage built with
    ``dependencies=["load"]`` as the reference writes it. Hashable like any
    tuple (a list is never hashed, so equal values never hash apart)."""

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if isinstance(other, list):
            return tuple.__eq__(self, tuple(other))
        return tuple.__eq__(self, other)

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal

    __hash__ = tuple.__hash__


_NO_IDS = StrTuple()


def _to_dependencies(value: Any) -> StrTuple:
    if value is None:
        return _NO_IDS
    if isinstance(value, str):
        raise TypeError(
            "Stage.dependencies must be a list of stage ids, not a bare string: "
            f"got {value!r} (did you mean [{value!r}]?)"
        )
    try:
        deps = StrTuple(value)
    except TypeError:
        raise TypeError(f"Stage.dependencies must be a list of stage ids, got {value!r}") from None
    seen: set[str] = set()
    for dep in deps:
        if not isinstance(dep, str) or not dep:
            raise TypeError(
                f"Stage.dependencies must hold non-empty stage ids, got {dep!r} in {value!r}"
            )
        if dep in seen:
            raise ValueError(f"Stage.dependencies lists {dep!r} twice: {value!r}")
        seen.add(dep)
    return deps


def _to_tags(value: Any) -> StrTuple:
    if value is None:
        return _NO_IDS
    if isinstance(value, str):
        raise TypeError(f"Stage.tags must be a list of strings, got {value!r}")
    try:
        tags = StrTuple(value)
    except TypeError:
        raise TypeError(f"Stage.tags must be a list of strings, got {value!r}") from None
    for tag in tags:
        if not isinstance(tag, str):
            raise TypeError(f"Stage.tags must hold strings, got {tag!r} in {value!r}")
    return tags


def _to_description(value: Any) -> Any:
    return "" if value is None else value


def _callable_name(func: Any) -> str:
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) else safe_repr(func, 80)


def _is_generator_function(func: Any) -> bool:
    """A generator or async generator function, also behind
    ``functools.partial`` or as an object's ``__call__``: calling it only
    builds a generator, so the stage would "complete" having done nothing."""
    while isinstance(func, functools.partial):
        func = func.func
    if not (inspect.isfunction(func) or inspect.ismethod(func) or isinstance(func, type)):
        func = type(func).__call__
    return inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func)


def _plain_function_binds(func: Any, arity: int) -> bool:
    """Whether a plain function surely takes ``arity`` positional arguments,
    read from its code object: the common case, about 20 times cheaper than
    ``inspect.signature`` (building 100 000 stages stays fast). False means
    "ask inspect", which also words the error."""
    if not inspect.isfunction(func) or hasattr(func, "__signature__"):
        return False
    code = func.__code__
    positional = code.co_argcount
    required = positional - len(func.__defaults__ or ())
    takes_more = positional >= arity or bool(code.co_flags & inspect.CO_VARARGS)
    kw_only = code.co_varnames[positional : positional + code.co_kwonlyargcount]
    kw_defaults = func.__kwdefaults__ or {}
    return takes_more and required <= arity and all(name in kw_defaults for name in kw_only)


def _check_call_shape(stage: Any, field: str, func: Any, arity: int, shape: str) -> None:
    """R3.6: refuse, when the stage is built, a callable that the run could
    only fail to call (after the default retries) or call to no effect."""
    if _is_generator_function(func):
        raise TypeError(
            f"{_where(stage, field, func)} is a generator function; it must return its "
            f"result, not yield it (R3.6): it is called as {shape}"
        )
    if _plain_function_binds(func, arity):
        return
    try:
        signature = inspect.signature(func, follow_wrapped=False)
    except (TypeError, ValueError):
        return  # no readable signature (some builtins and C callables): trusted
    try:
        signature.bind(*([None] * arity))
    except TypeError as exc:
        raise TypeError(
            f"{_where(stage, field, func)}{signature} cannot be called as {shape} "
            f"(R3.6): {exc}{_hint(signature, arity)}"
        ) from None


def _where(stage: Any, field: str, func: Any) -> str:
    return f"Stage {safe_repr(getattr(stage, 'stage_id', None))}: {field} {_callable_name(func)}"


def _hint(signature: inspect.Signature, arity: int) -> str:
    """What the caller most likely meant, for the two usual mistakes."""
    if arity != 2:
        return ""
    kinds = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
    positional = [p for p in signature.parameters.values() if p.kind in kinds]
    if len(positional) > arity:
        return "; a stage with several dependencies receives one dict of their results"
    if len(positional) < arity:
        return "; a handler also receives its input (initial input or dependency results)"
    return ""


def _check_handler(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not callable(value):
        raise TypeError(
            f"{type(instance).__name__}.{attribute.name} must be callable, got {value!r}"
        )
    _check_call_shape(instance, attribute.name, value, 2, "handler(ctx, input)")


def _check_cleanup(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    v.optional_callable(instance, attribute, value)
    _check_call_shape(instance, attribute.name, value, 1, "cleanup(ctx)")


def _check_retry(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is not None and not isinstance(value, RetryConfig):
        raise TypeError(f"Stage.retry_config must be a RetryConfig or None, got {value!r}")


@attrs.frozen
class Stage:
    """One unit of work in a pipeline.

    The handler is called as ``handler(ctx, input)`` where ``input`` is the
    pipeline's initial input (no dependencies), the single dependency's
    result, or a dict of dependency id -> result in the listed order.
    ``timeout_seconds`` and ``retry_config`` override the pipeline's
    defaults for this stage; ``critical=False`` makes the stage optional.
    ``dependencies`` and ``tags`` are stored as tuples.

    A ``Stage`` is also callable like its handler, so a function decorated
    with ``@stage`` can still be unit-tested directly.
    """

    #: Unique id within a pipeline; dependencies refer to it.
    stage_id: str = attrs.field(validator=v.non_empty_str)
    #: Human-readable name for reports.
    name: str = attrs.field(validator=attrs.validators.instance_of(str))
    #: ``handler(ctx, input)``; sync or async.
    handler: Handler = attrs.field(validator=_check_handler)
    #: Ids of the stages that must complete first, in the order their results are passed.
    dependencies: StrTuple = attrs.field(default=_NO_IDS, converter=_to_dependencies)
    #: Per-attempt limit; ``None`` = use the pipeline's ``stage_timeout_seconds``.
    timeout_seconds: float | None = attrs.field(default=None, validator=v.timeout())
    #: Retry policy for this stage; ``None`` = the pipeline's.
    retry_config: RetryConfig | None = attrs.field(default=None, validator=_check_retry)
    #: False makes the stage optional: its failure never stops or fails the run.
    critical: bool = attrs.field(default=True, validator=v.boolean)
    #: ``cleanup(ctx)``, run after a stop if the stage started.
    cleanup_handler: CleanupHandler | None = attrs.field(default=None, validator=_check_cleanup)
    #: Free text for people.
    description: str = attrs.field(
        default="", converter=_to_description, validator=attrs.validators.instance_of(str)
    )
    #: Free labels for people and tools; ``PipelineConfig.tag_limits`` bounds them (R12).
    tags: StrTuple = attrs.field(default=_NO_IDS, converter=_to_tags)
    #: Where the handler runs (R11); ``None`` = the pipeline's ``executor``.
    executor: Any = attrs.field(default=None, validator=v.executor(optional=True))
    #: The handler's code version for resume and the cache (R13.3); ``None`` =
    #: a fingerprint of the handler's code.
    version: str | None = attrs.field(
        default=None, validator=attrs.validators.optional(v.non_empty_str)
    )
    #: Reuse a completed result of an earlier run whose key matches (R13.4).
    cache: bool = attrs.field(default=False, validator=v.boolean)
    #: Oldest cached result (seconds) that ``cache`` may reuse; ``None`` = any age.
    cache_expiration: float | None = attrs.field(default=None, validator=v.timeout())

    def __call__(self, ctx: PipelineContext, input_data: Any = None) -> Any:
        return self.handler(ctx, input_data)


def create_stage(
    stage_id: str,
    name: str,
    handler: Handler,
    dependencies: Iterable[str] | None = None,
    timeout_seconds: float | None = None,
    critical: bool = True,
    *,
    retry_config: RetryConfig | None = None,
    cleanup_handler: CleanupHandler | None = None,
    description: str = "",
    tags: Iterable[str] | None = None,
    executor: Any = None,
    version: str | None = None,
    cache: bool = False,
    cache_expiration: float | None = None,
) -> Stage:
    """Build a :class:`Stage`; the same validation applies."""
    return Stage(
        stage_id=stage_id,
        name=name,
        handler=handler,
        dependencies=dependencies,  # converted to a tuple
        timeout_seconds=timeout_seconds,
        retry_config=retry_config,
        critical=critical,
        cleanup_handler=cleanup_handler,
        description=description,
        tags=tags,  # converted to a tuple
        executor=executor,
        version=version,
        cache=cache,
        cache_expiration=cache_expiration,
    )


@overload
def stage(func: Handler, /) -> Stage: ...


@overload
def stage(
    func: None = None,
    /,
    *,
    stage_id: str | None = None,
    name: str | None = None,
    dependencies: Iterable[str] | None = None,
    timeout_seconds: float | None = None,
    retry_config: RetryConfig | None = None,
    critical: bool = True,
    cleanup_handler: CleanupHandler | None = None,
    description: str | None = None,
    tags: Iterable[str] | None = None,
    executor: Any = None,
    version: str | None = None,
    cache: bool = False,
    cache_expiration: float | None = None,
) -> Callable[[Handler], Stage]: ...


def stage(
    func: Handler | None = None,
    /,
    *,
    stage_id: str | None = None,
    name: str | None = None,
    dependencies: Iterable[str] | None = None,
    timeout_seconds: float | None = None,
    retry_config: RetryConfig | None = None,
    critical: bool = True,
    cleanup_handler: CleanupHandler | None = None,
    description: str | None = None,
    tags: Iterable[str] | None = None,
    executor: Any = None,
    version: str | None = None,
    cache: bool = False,
    cache_expiration: float | None = None,
) -> Stage | Callable[[Handler], Stage]:
    """Turn a handler function into a :class:`Stage`.

    ``stage_id`` defaults to the function's name, ``name`` to the id and
    ``description`` to the first line of the docstring. Usable bare
    (``@stage``) or with arguments (``@stage(stage_id="load")``).
    """

    def decorate(handler: Handler) -> Stage:
        sid = stage_id if stage_id is not None else getattr(handler, "__name__", "")
        doc = (getattr(handler, "__doc__", None) or "").strip()
        return create_stage(
            sid,
            name if name is not None else sid,
            handler,
            dependencies,
            timeout_seconds,
            critical,
            retry_config=retry_config,
            cleanup_handler=cleanup_handler,
            description=description if description is not None else doc.split("\n")[0],
            tags=tags,
            executor=executor,
            version=version,
            cache=cache,
            cache_expiration=cache_expiration,
        )

    return decorate if func is None else decorate(func)

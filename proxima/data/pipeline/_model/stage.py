"""Stage definitions: :class:`Stage`, :func:`create_stage` and ``@stage``."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, overload

import attrs

from . import validators as v
from .config import RetryConfig

if TYPE_CHECKING:
    from .._engine.context import PipelineContext

__all__ = ["CleanupHandler", "Handler", "Stage", "create_stage", "stage"]

#: ``handler(ctx, input)``; may return a value or an awaitable of one.
Handler = Callable[["PipelineContext", Any], Any]
#: ``cleanup(ctx)``; may return ``None`` or an awaitable.
CleanupHandler = Callable[["PipelineContext"], Any]


def _to_dependencies(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise TypeError(
            "Stage.dependencies must be a list of stage ids, not a bare string: "
            f"got {value!r} (did you mean [{value!r}]?)"
        )
    try:
        deps = tuple(value)
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


def _to_tags(value: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        raise TypeError(f"Stage.tags must be a list of strings, got {value!r}")
    return tuple(value)


def _to_description(value: Any) -> Any:
    return "" if value is None else value


def _required_callable(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not callable(value):
        raise TypeError(
            f"{type(instance).__name__}.{attribute.name} must be callable, got {value!r}"
        )


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
    handler: Handler = attrs.field(validator=_required_callable)
    #: Ids of the stages that must complete first, in the order their results are passed.
    dependencies: tuple[str, ...] = attrs.field(default=(), converter=_to_dependencies)
    #: Per-attempt limit; ``None`` = use the pipeline's ``stage_timeout_seconds``.
    timeout_seconds: float | None = attrs.field(default=None, validator=v.timeout())
    #: Retry policy for this stage; ``None`` = the pipeline's.
    retry_config: RetryConfig | None = attrs.field(default=None, validator=_check_retry)
    #: False makes the stage optional: its failure never stops or fails the run.
    critical: bool = attrs.field(default=True, validator=v.boolean)
    #: ``cleanup(ctx)``, run after a stop if the stage started.
    cleanup_handler: CleanupHandler | None = attrs.field(
        default=None, validator=v.optional_callable
    )
    #: Free text for people.
    description: str = attrs.field(
        default="", converter=_to_description, validator=attrs.validators.instance_of(str)
    )
    #: Free labels for people and tools; ``PipelineConfig.tag_limits`` bounds them (R12).
    tags: tuple[str, ...] = attrs.field(default=(), converter=_to_tags)
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

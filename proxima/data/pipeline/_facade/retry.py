"""``@with_retry``: the scheduler's retry rules (R4) for any async function.

The decisions themselves live on :class:`RetryConfig` (``should_retry`` and
``get_delay``), so a stage and a decorated function retry identically.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any, ParamSpec, TypeVar

import anyio

from .._model.config import RetryConfig
from .._model.enums import RetryStrategy
from .._model.log import logger
from .._model.text import describe

__all__ = ["with_retry"]

P = ParamSpec("P")
T = TypeVar("T")


def with_retry(
    max_retries: int = 3,
    strategy: RetryStrategy = RetryStrategy.EXPONENTIAL_BACKOFF,
    initial_delay: float = 1.0,
    max_delay: float = 60.0,
    backoff_factor: float = 2.0,
    retry_on_exceptions: Iterable[type[BaseException]] | None = None,
    *,
    config: RetryConfig | None = None,
) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Coroutine[Any, Any, T]]]:
    """Retry an async function on failure, with the same rules as a stage.

    At most ``1 + max_retries`` calls; the delays come from
    :meth:`RetryConfig.get_delay` and are cancellable. When the attempts run
    out the last exception is re-raised unchanged. Cancellation,
    ``KeyboardInterrupt`` and ``PipelineCancelledException`` are never
    retried. Pass ``config=`` to reuse an existing :class:`RetryConfig`; the
    arguments are validated when the decorator is applied.
    """
    cfg = config or RetryConfig(
        max_retries=max_retries,
        strategy=strategy,
        initial_delay_seconds=initial_delay,
        max_delay_seconds=max_delay,
        backoff_factor=backoff_factor,
        retry_on_exceptions=retry_on_exceptions,
    )

    def decorate(func: Callable[P, Awaitable[T]]) -> Callable[P, Coroutine[Any, Any, T]]:
        if not callable(func):
            raise TypeError(f"with_retry needs a callable, got {func!r}")

        @functools.wraps(func)
        async def retrying(*args: P.args, **kwargs: P.kwargs) -> T:
            attempt = 1
            while True:
                try:
                    outcome = func(*args, **kwargs)
                    if inspect.isawaitable(outcome):
                        return await outcome
                    return outcome
                except Exception as exc:
                    if not cfg.should_retry(exc, attempt=attempt):
                        raise
                    delay = cfg.get_delay(attempt - 1)
                    logger.info(
                        "%s failed (attempt %d): %s; retrying in %gs",
                        getattr(func, "__qualname__", func),
                        attempt,
                        describe(exc),  # user text: must not break the retry
                        delay,
                    )
                await anyio.sleep(delay)
                attempt += 1

        retrying.retry_config = cfg  # type: ignore[attr-defined]
        return retrying

    return decorate

"""The fluent builder: :class:`PipelineBuilder`."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from .._model.config import PipelineConfig, RetryConfig
from .._model.enums import RetryStrategy
from .._model.errors import PipelineValidationError
from .._model.sentinel import UNSET, Unset
from .._model.stage import CleanupHandler, Handler, Stage
from .pipeline import Pipeline

__all__ = ["PipelineBuilder"]


def _given(**fields: Any) -> dict[str, Any]:
    return {name: value for name, value in fields.items() if value is not UNSET}


class PipelineBuilder:
    """Fluent construction of a :class:`Pipeline`.

    Each ``with_*`` method changes only the fields it is given and validates
    them at once; :meth:`build` checks the graph and returns the pipeline.
    """

    def __init__(self, name: str = "pipeline") -> None:
        self._config = PipelineConfig(name=name)
        self._stages: dict[str, Stage] = {}

    @property
    def config(self) -> PipelineConfig:
        """The configuration built so far."""
        return self._config

    def with_retry(
        self,
        max_retries: int | Unset = UNSET,
        strategy: RetryStrategy | Unset = UNSET,
        initial_delay: float | Unset = UNSET,
        max_delay: float | Unset = UNSET,
        backoff_factor: float | Unset = UNSET,
        retry_on_exceptions: Iterable[type[BaseException]] | Unset | None = UNSET,
        retry_on_timeout: bool | Unset = UNSET,
    ) -> PipelineBuilder:
        """Set the default retry policy of every stage."""
        retry = attrs.evolve(
            self._config.retry,
            **_given(
                max_retries=max_retries,
                strategy=strategy,
                initial_delay_seconds=initial_delay,
                max_delay_seconds=max_delay,
                backoff_factor=backoff_factor,
                retry_on_exceptions=retry_on_exceptions,
                retry_on_timeout=retry_on_timeout,
            ),
        )
        self._config = attrs.evolve(self._config, retry=retry)
        return self

    def with_timeout(
        self,
        stage_timeout: float | Unset | None = UNSET,
        pipeline_timeout: float | Unset | None = UNSET,
        cleanup_timeout: float | Unset | None = UNSET,
        grace_period: float | Unset | None = UNSET,
    ) -> PipelineBuilder:
        """Set time limits; ``None`` means no limit."""
        timeout = attrs.evolve(
            self._config.timeout,
            **_given(
                stage_timeout_seconds=stage_timeout,
                pipeline_timeout_seconds=pipeline_timeout,
                cleanup_timeout_seconds=cleanup_timeout,
                grace_period_seconds=grace_period,
            ),
        )
        self._config = attrs.evolve(self._config, timeout=timeout)
        return self

    def with_parallel(
        self, enabled: bool | Unset = UNSET, max_parallel: int | Unset = UNSET
    ) -> PipelineBuilder:
        """Run independent stages concurrently, at most ``max_parallel`` at once.

        Only the arguments given change; ``with_parallel()`` alone turns
        parallel execution on.
        """
        if enabled is UNSET and max_parallel is UNSET:
            enabled = True
        self._config = attrs.evolve(
            self._config, **_given(parallel_stages=enabled, max_parallel=max_parallel)
        )
        return self

    def continue_on_error(self, enabled: bool = True) -> PipelineBuilder:
        """Keep-going mode: a failure only skips the failed stage's dependents."""
        self._config = attrs.evolve(self._config, continue_on_error=enabled)
        return self

    def collect_metrics(self, enabled: bool = True) -> PipelineBuilder:
        """Record timings and attempts in each ``StageResult.metrics`` (on by default)."""
        self._config = attrs.evolve(self._config, collect_metrics=enabled)
        return self

    def cleanup_on_cancel(self, enabled: bool = True) -> PipelineBuilder:
        """After a stop, run the cleanup handlers of stages that started (on by default)."""
        self._config = attrs.evolve(self._config, cleanup_on_cancel=enabled)
        return self

    def with_executor(self, executor: Any) -> PipelineBuilder:
        """Where stages that name no executor run (R11): ``"auto"``,
        ``"inline"``, ``"thread"``, ``"process"`` or an ``Executor``."""
        self._config = attrs.evolve(self._config, executor=executor)
        return self

    def with_tag_limits(self, **limits: int) -> PipelineBuilder:
        """At most ``limit`` attempts of stages tagged ``tag`` at once (R12),
        merged into the limits set so far: ``with_tag_limits(db=2)``."""
        merged = {**self._config.tag_limits, **limits}
        self._config = attrs.evolve(self._config, tag_limits=merged)
        return self

    def add_stage(
        self,
        stage_id: str | Stage,
        name: str | None = None,
        handler: Handler | None = None,
        dependencies: Iterable[str] | None = None,
        *,
        timeout_seconds: float | None = None,
        retry_config: RetryConfig | None = None,
        critical: bool = True,
        cleanup_handler: CleanupHandler | None = None,
        description: str = "",
        tags: Iterable[str] | None = None,
        executor: Any = None,
        version: str | None = None,
        cache: bool = False,
        cache_expiration: float | None = None,
    ) -> PipelineBuilder:
        """Add a stage, given either as a :class:`Stage` or as its fields."""
        if isinstance(stage_id, Stage):
            new = stage_id
        else:
            new = Stage(
                stage_id=stage_id,
                name=name if name is not None else stage_id,
                handler=handler,  # type: ignore[arg-type]  # validated by Stage
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
        if new.stage_id in self._stages:
            raise PipelineValidationError(
                f"duplicate stage id {new.stage_id!r}", stage_id=new.stage_id
            )
        self._stages[new.stage_id] = new
        return self

    def build(self) -> Pipeline:
        """The pipeline, its graph already validated."""
        pipeline = Pipeline(self._config)
        pipeline.add_stages(self._stages.values())
        pipeline.validate()
        return pipeline

"""Stage-based async pipelines: a DAG of stages with timeouts, retries,
cancellation with cleanup, pause/resume and bounded parallelism.

Runs on asyncio (with or without uvloop) and trio through anyio. Everything
public is importable from here; the underscored modules are private.
"""

from ._engine.context import PipelineContext as PipelineContext
from ._facade.builder import PipelineBuilder as PipelineBuilder
from ._facade.pipeline import Pipeline as Pipeline
from ._facade.pipeline import run_pipeline as run_pipeline
from ._facade.retry import with_retry as with_retry
from ._model.config import PipelineConfig as PipelineConfig
from ._model.config import RetryConfig as RetryConfig
from ._model.config import TimeoutConfig as TimeoutConfig
from ._model.enums import CancellationReason as CancellationReason
from ._model.enums import PipelineStatus as PipelineStatus
from ._model.enums import RetryStrategy as RetryStrategy
from ._model.enums import StageStatus as StageStatus
from ._model.errors import DependencyFailedException as DependencyFailedException
from ._model.errors import PipelineAlreadyRunningError as PipelineAlreadyRunningError
from ._model.errors import PipelineCancelledException as PipelineCancelledException
from ._model.errors import PipelineException as PipelineException
from ._model.errors import PipelineTimeoutException as PipelineTimeoutException
from ._model.errors import PipelineValidationError as PipelineValidationError
from ._model.errors import StageExecutionException as StageExecutionException
from ._model.errors import StageTimeoutException as StageTimeoutException
from ._model.events import EventKind as EventKind
from ._model.events import Listener as Listener
from ._model.events import PipelineEvent as PipelineEvent
from ._model.results import PipelineResult as PipelineResult
from ._model.results import StageResult as StageResult
from ._model.sentinel import UNSET as UNSET
from ._model.sentinel import Unset as Unset
from ._model.stage import Stage as Stage
from ._model.stage import create_stage as create_stage
from ._model.stage import stage as stage
from .observe.otel import OpenTelemetryListener as OpenTelemetryListener
from .observe.progress import RichProgress as RichProgress
from .observe.stream import EventStream as EventStream

__all__ = [
    "UNSET",
    "CancellationReason",
    "DependencyFailedException",
    "EventKind",
    "EventStream",
    "Listener",
    "OpenTelemetryListener",
    "Pipeline",
    "PipelineAlreadyRunningError",
    "PipelineBuilder",
    "PipelineCancelledException",
    "PipelineConfig",
    "PipelineContext",
    "PipelineEvent",
    "PipelineException",
    "PipelineResult",
    "PipelineStatus",
    "PipelineTimeoutException",
    "PipelineValidationError",
    "RetryConfig",
    "RetryStrategy",
    "RichProgress",
    "Stage",
    "StageExecutionException",
    "StageResult",
    "StageStatus",
    "StageTimeoutException",
    "TimeoutConfig",
    "Unset",
    "create_stage",
    "run_pipeline",
    "stage",
    "with_retry",
]

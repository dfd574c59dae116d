"""Stage-based async pipelines: a DAG of stages with timeouts, retries,
cancellation with cleanup, pause/resume and bounded parallelism.

Runs on asyncio (with or without uvloop) and trio through anyio. Everything
public is importable from here; the underscored modules are private.
"""

from ._config import PipelineConfig as PipelineConfig
from ._config import RetryConfig as RetryConfig
from ._config import TimeoutConfig as TimeoutConfig
from ._context import PipelineContext as PipelineContext
from ._enums import CancellationReason as CancellationReason
from ._enums import PipelineStatus as PipelineStatus
from ._enums import RetryStrategy as RetryStrategy
from ._enums import StageStatus as StageStatus
from ._errors import DependencyFailedException as DependencyFailedException
from ._errors import PipelineAlreadyRunningError as PipelineAlreadyRunningError
from ._errors import PipelineCancelledException as PipelineCancelledException
from ._errors import PipelineException as PipelineException
from ._errors import PipelineTimeoutException as PipelineTimeoutException
from ._errors import PipelineValidationError as PipelineValidationError
from ._errors import StageExecutionException as StageExecutionException
from ._errors import StageTimeoutException as StageTimeoutException
from ._events import EventKind as EventKind
from ._events import EventStream as EventStream
from ._events import Listener as Listener
from ._events import PipelineEvent as PipelineEvent
from ._otel import OpenTelemetryListener as OpenTelemetryListener
from ._pipeline import Pipeline as Pipeline
from ._pipeline import PipelineBuilder as PipelineBuilder
from ._pipeline import run_pipeline as run_pipeline
from ._progress import RichProgress as RichProgress
from ._results import PipelineResult as PipelineResult
from ._results import StageResult as StageResult
from ._retry import with_retry as with_retry
from ._stage import Stage as Stage
from ._stage import create_stage as create_stage
from ._stage import stage as stage

__all__ = [
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
    "create_stage",
    "run_pipeline",
    "stage",
    "with_retry",
]

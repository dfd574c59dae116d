"""The ledger builds each StageResult field by field, not through its
``__init__`` (four times cheaper, once per stage). These tests fail when
``StageResult`` grows a field, a validator, a converter or a post-init hook
that the ledger's builder would skip."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

from proxima.data.pipeline import (
    Pipeline,
    PipelineConfig,
    PipelineContext,
    RetryConfig,
    Stage,
    StageResult,
    StageStatus,
)

pytestmark = pytest.mark.anyio


def test_stage_result_has_nothing_the_ledgers_builder_would_skip() -> None:
    assert not hasattr(StageResult, "__attrs_post_init__")
    assert not hasattr(StageResult, "__attrs_pre_init__")
    for field in attrs.fields(StageResult):
        assert field.validator is None, field.name
        assert field.converter is None, field.name
        hook: object = field.on_setattr
        assert hook is None or hook is attrs.setters.NO_OP, field.name


async def test_every_field_of_every_record_is_set_as_the_constructor_would() -> None:
    async def ok(ctx: PipelineContext, value: Any) -> int:
        return 1

    async def boom(ctx: PipelineContext, value: Any) -> int:
        raise ValueError("boom")

    pipeline = Pipeline(
        PipelineConfig(continue_on_error=True, retry=RetryConfig(max_retries=0))
    ).add_stages(
        [
            Stage(stage_id="a", name="A", handler=ok),
            Stage(stage_id="b", name="B", handler=boom, critical=False),
            Stage(stage_id="c", name="C", handler=ok, dependencies=["b"], critical=False),
        ]
    )
    result = await pipeline.execute()
    statuses = {sid: r.status for sid, r in result.stage_results.items()}
    assert statuses == {
        "a": StageStatus.COMPLETED,
        "b": StageStatus.FAILED,
        "c": StageStatus.SKIPPED,
    }
    names = [field.name for field in attrs.fields(StageResult)]
    for record in result.stage_results.values():
        values = {name: getattr(record, name) for name in names}  # raises if a slot is unset
        assert StageResult(**values) == record
    assert result.stage_results["a"].stage_name == "A"
    assert result.stage_results["a"].attempt_count == 1
    assert result.stage_results["b"].error is not None

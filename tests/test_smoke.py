import pytest

from proxima.data.pipeline import PipelineBuilder, PipelineStatus

pytestmark = pytest.mark.anyio


async def test_r3_chain_passes_results() -> None:
    async def a(ctx, _):
        return 1

    async def b(ctx, x):
        return x + 1

    p = PipelineBuilder("t").add_stage("a", "A", a).add_stage("b", "B", b, ["a"]).build()
    r = await p.execute()
    assert r.status is PipelineStatus.COMPLETED
    assert r.stage_results["b"].result == 2

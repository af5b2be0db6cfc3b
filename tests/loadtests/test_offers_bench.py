"""The offers bench (python -m loadtests.offers_bench) runs end to end, small, and reports each
figure it promises (the figures themselves are in the report, never asserted here)."""

from __future__ import annotations

from loadtests.offers_bench import run
from tests.conftest import REDIS_URL


async def test_the_offers_bench_times_each_mode(pg_dsn):
    admin = pg_dsn.rsplit("/", 1)[0] + "/postgres"
    out = await run(admin, REDIS_URL, sales=5, offers=2)
    for mode in ("none", "plain", "presenting"):
        assert out[mode]["p50_ms"] > 0 and out[mode]["p99_ms"] >= out[mode]["p50_ms"]
    assert set(out["probe_ms"]) == {"none", "with_offers"}
    assert set(out["p50_ratio_to_none"]) == {"plain", "presenting"}

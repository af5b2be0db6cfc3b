"""The reorder bench (python -m loadtests.reorder_bench) runs end to end, small: both kinds of
round are timed with their probe, and the prediction pass recomputes every seeded member (the
figures themselves go to BENCHMARKS.md, never asserted here)."""

from __future__ import annotations

from loadtests.reorder_bench import parser, run
from tests.conftest import REDIS_URL


async def test_the_reorder_bench_times_both_rounds_and_the_predictions(pg_dsn):
    admin = pg_dsn.rsplit("/", 1)[0] + "/postgres"
    args = parser().parse_args(
        ["--database-url", admin, "--redis-url", REDIS_URL, "--sales", "10", "--rounds", "1",
         "--members", "200", "--visits", "4"]
    )  # fmt: skip
    result = await run(args)
    assert [r["trigger"] for r in result["rounds"]] == [False, True]
    assert result["predictions"]["events"] == result["predictions"]["members"] == 200
    assert result["predictions"]["predictions"] >= 200
    assert set(result["speed_probe_ms"]) == {"r1-off", "r1-on", "predictions"}

"""The webhooks bench (python -m loadtests webhooks) runs end to end, small: every delivery
it writes is delivered, every sale of each phase is answered, and it reports each figure it
promises (the figures themselves are in the report, never asserted here)."""

from __future__ import annotations

import argparse

from loadtests.webhooks import add_flags, run
from tests.conftest import REDIS_URL


async def test_the_webhooks_bench_delivers_everything_and_times_each_phase(pg_dsn):
    p = argparse.ArgumentParser()
    add_flags(p)
    admin = pg_dsn.rsplit("/", 1)[0] + "/postgres"
    args = p.parse_args(
        [
            "--database-url",
            admin,
            "--redis-url",
            REDIS_URL,
            "--deliveries",
            "300",
            "--members",
            "30",
            "--rate",
            "20",
            "--seconds",
            "0.5",
            "--sessions",
            "2",
        ]
    )
    result = await run(args)
    t = result["throughput"]
    assert t["delivered"] == t["deliveries"] == 300 and t["per_second"] > 0
    assert set(result["ledger_sale_ms"]) == {"none", "timeout", "ok"}
    assert all(v["n"] == 20 for v in result["ledger_sale_ms"].values())
    assert result["refused"] == {"none": 0, "timeout": 0, "ok": 0}
    assert set(result["speed_probe_ms"]) == {"throughput", "ledger"}

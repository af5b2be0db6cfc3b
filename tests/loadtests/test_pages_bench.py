"""The page bench (python -m loadtests pages) runs end to end: every sale it times reaches
the page's DOM, and it reports each figure it promises (the figures themselves are in
BENCHMARKS.md, never asserted here)."""

from __future__ import annotations

import argparse

from loadtests.pages import add_flags, run
from tests.conftest import REDIS_URL


async def test_the_page_bench_times_every_sale_and_each_load(pg_dsn):
    p = argparse.ArgumentParser()
    add_flags(p)
    admin = pg_dsn.rsplit("/", 1)[0] + "/postgres"
    args = p.parse_args(
        ["--database-url", admin, "--redis-url", REDIS_URL, "--sales", "8", "--loads", "2"]
    )
    result = await run(args)
    assert result["missing"] == 0 and result["shown"] == 8
    assert result["sale_reply_to_dom_ms"]["n"] == 8 and result["first_render_ms"]["n"] == 2
    assert result["first_render_ms"]["min"] > 0
    assert set(result["script_gzip_bytes"]) == {"wallet.js", "console.js"}
    assert set(result["speed_probe_ms"]) == {"first_render", "sale_to_dom"}

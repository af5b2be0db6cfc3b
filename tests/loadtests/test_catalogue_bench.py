"""The catalogue bench (python -m loadtests catalogue) runs end to end, small: every kind of
import it times counts each row as it should, and the sale timings come in both kinds (the
figures themselves are in BENCHMARKS.md, never asserted here)."""

from __future__ import annotations

import argparse

from loadtests.catalogue import add_flags, run
from tests.conftest import REDIS_URL


async def test_the_catalogue_bench_times_each_import_and_both_kinds_of_sale(pg_dsn):
    p = argparse.ArgumentParser()
    add_flags(p)
    admin = pg_dsn.rsplit("/", 1)[0] + "/postgres"
    args = p.parse_args(
        ["--database-url", admin, "--redis-url", REDIS_URL, "--rows", "2000", "--runs", "1",
         "--sales", "10"]
    )  # fmt: skip
    result = await run(args)
    rates = result["import_rows_per_s"]
    assert set(rates) == {"create", "unchanged", "update", "csv_create"}
    assert all(r["median"] > 0 and len(r["runs"]) == 1 for r in rates.values())
    assert (
        result["sale_ms"]["with_category"]["n"] == result["sale_ms"]["without_category"]["n"] == 10
    )
    assert set(result["speed_probe_ms"]) == {"run1", "sales"}

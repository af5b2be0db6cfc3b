"""Each scenario, briefly, against two real gateway nodes (subprocesses): the report has its
structure and the correctness verdict holds. Small sizes; a few seconds each."""

from __future__ import annotations

import asyncio
import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from loadtests.__main__ import main
from loadtests.config import build
from loadtests.runner import EXIT_OK, EXIT_SLO, EXIT_UNSUPPORTED, Run, execute
from tests.conftest import REDIS_URL
from tests.support import NodeProcess

pytestmark = pytest.mark.slow

LATENCY_KEYS = {
    "count",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p99.9_ms",
    "max_ms",
    "mean_ms",
    "rate_per_s",
}


@pytest.fixture(scope="module")
def urls(pg_dsn: str, redis_prefix: str) -> Iterator[list[str]]:
    nodes = [NodeProcess(pg_dsn, REDIS_URL, redis_prefix, f"lt-{n}") for n in ("a", "b")]
    try:
        for node in nodes:
            asyncio.run(node.wait_ready())
        yield [n.url for n in nodes]
    finally:
        for node in nodes:
            node.terminate()
        for node in nodes:
            try:
                node.wait(15)
            except Exception:
                node.kill()
            if node.proc.stderr is not None:
                node.proc.stderr.close()


def config(scenario: str, urls: list[str], pg_dsn: str, **kw: Any) -> Any:
    base: dict[str, Any] = {
        "url": urls,
        "database_url": pg_dsn,
        "members": 20,
        "sessions": 40,
        "rate": 20.0,
        "duration": 2.0,
        "ramp": 0.0,
        "workers": 1,
        "out": None,
        "progress": False,
        "quiesce": 5.0,
        "timeout": 5.0,
    }
    base.update(kw)
    return build(scenario, None, base)


def assert_structure(report: dict[str, Any]) -> None:
    for key in (
        "scenario",
        "latency",
        "counters",
        "errors",
        "connections",
        "throughput",
        "verdict",
        "slo",
        "exit_code",
    ):
        assert key in report, key
    for name, row in report["latency"].items():
        assert set(row) >= LATENCY_KEYS - {"rate_per_s"}, name
    assert {c["name"] for c in report["verdict"]["checks"]} >= {
        "balances",
        "replies",
        "gaps",
        "resume",
        "ledger",
    }
    for key in ("scheduled", "late", "dropped", "errors_total", "commands_sent"):
        assert key in report["counters"]
    assert report["verdict"]["ok"], json.dumps(report["verdict"], indent=1)


async def test_checkout(urls: list[str], pg_dsn: str) -> None:
    report = await execute(
        config("checkout", urls, pg_dsn, workers=2, slo=["flow.p99<60s", "errors.rate<1%"])
    )
    assert_structure(report)
    assert report["exit_code"] == EXIT_OK, report["status"]
    lat = report["latency"]
    assert lat["reserve"]["count"] == report["counters"]["scheduled"] == 40
    assert lat["commit"]["count"] + lat.get("release", {"count": 0})["count"] == 40
    assert lat["sale"]["count"] == 40 and lat["flow"]["count"] == 40
    assert ("lookup" in lat) or ("balance" in lat)
    assert report["counters"]["errors_total"] == 0
    assert report["connections"]["sessions_held"] == 40
    assert lat["push"]["count"] > 0  # watchers saw the flows' changes
    assert [s["status"] for s in report["slo"]] == ["pass", "pass"]


async def test_wallet_views_through_the_members_app_sessions(urls: list[str], pg_dsn: str) -> None:
    report = await execute(
        config("wallet", urls, pg_dsn, members=10, sessions=10, rate=20.0, slo=["wallet.p99<60s"])
    )
    assert_structure(report)
    assert report["exit_code"] == EXIT_OK, report["status"]
    assert report["latency"]["wallet"]["count"] == report["counters"]["scheduled"] == 40
    assert report["counters"]["errors_total"] == 0


async def test_sessions_push_lag_for_every_change(urls: list[str], pg_dsn: str) -> None:
    report = await execute(config("sessions", urls, pg_dsn, members=10, sessions=30, rate=10.0))
    assert_structure(report)
    assert report["exit_code"] == EXIT_OK
    sales = report["latency"]["sale"]["count"]
    assert sales == 20
    # three sessions per member, on the other node: every change reaches each of them
    assert report["latency"]["push"]["count"] == 3 * sales
    assert report["counters"]["pushes"] == 3 * sales


async def test_churn_resumes_without_gaps(urls: list[str], pg_dsn: str) -> None:
    report = await execute(
        config(
            "churn",
            urls,
            pg_dsn,
            members=10,
            sessions=20,
            rate=20.0,
            churn_rate=10.0,
            churn_down=0.3,
            duration=3.0,
        )
    )
    assert_structure(report)
    assert report["exit_code"] == EXIT_OK
    c = report["counters"]
    assert c["reconnects"] >= 20 and report["latency"]["reconnect"]["count"] == c["reconnects"]
    assert c["resumes"] == c["reconnects"]
    assert c.get("resumes_broken", 0) == 0
    assert c.get("resume_missed_changes", 0) > 0  # changes happened while sessions were away
    assert report["connections"]["sessions_open_at_end"] == 20


async def test_broadcast_time_to_last_receipt(urls: list[str], pg_dsn: str) -> None:
    report = await execute(
        config(
            "broadcast",
            urls,
            pg_dsn,
            sessions=30,
            duration=1.0,
            broadcast_count=2,
            broadcast_interval=0.5,
        )
    )
    assert_structure(report)
    bc = report["broadcast"]
    if bc.get("supported") is False:  # a gateway without POST /admin/broadcast
        assert report["exit_code"] == EXIT_UNSUPPORTED
        return
    assert report["exit_code"] == EXIT_OK
    assert [r["received"] for r in bc["rounds"]] == [30, 30]
    assert bc["complete_rounds"] == 2 and bc["last_receipt_ms"] > 0
    assert report["latency"]["broadcast"]["count"] == 60


async def test_mixed(urls: list[str], pg_dsn: str) -> None:
    report = await execute(
        config(
            "mixed",
            urls,
            pg_dsn,
            workers=2,
            duration=3.0,
            ramp=1.0,
            churn_rate=5.0,
            broadcast_interval=1.0,
        )
    )
    assert_structure(report)
    assert report["exit_code"] == EXIT_OK, (report["status"], report["errors"])
    assert {"reserve", "commit", "sale", "push", "reconnect", "flow"} <= set(report["latency"])


async def test_unsupported_broadcast_and_error_exit_codes(urls: list[str], pg_dsn: str) -> None:
    run = Run(config("broadcast", urls, pg_dsn, broadcast_count=1))
    run.broadcast_supported = False
    base = {
        "verdict": {"ok": True},
        "counters": {},
        "errors": {},
        "connections": {"sessions_asked": 0},
        "slo": [],
    }
    assert run.exit_code(base)[0] == EXIT_UNSUPPORTED
    run = Run(config("checkout", urls, pg_dsn))
    assert run.exit_code({**base, "verdict": {"ok": False}})[0] == 2
    assert run.exit_code({**base, "counters": {"commands_sent": 100, "errors_total": 5}})[0] == 2
    assert run.exit_code({**base, "counters": {"commands_sent": 100, "dropped": 50}})[0] == 2
    assert run.exit_code({**base, "slo": [{"ok": False}]})[0] == EXIT_SLO


def test_cli_slo_breach_exit_code_and_files(urls: list[str], pg_dsn: str, tmp_path: Path) -> None:
    js, cs = tmp_path / "r.json", tmp_path / "r.csv"
    code = main(
        ["checkout", "--url", ",".join(urls), "--database-url", pg_dsn, "--members", "10", "--rate", "10",
         "--duration", "1", "--ramp", "0", "--workers", "1", "--no-progress", "--json", str(js), "--csv", str(cs),
         "--slo", "reserve.p99<1us", "--slo", "errors.count<=0"]
    )  # fmt: skip
    assert code == EXIT_SLO
    report = json.loads(js.read_text())
    assert report["exit_code"] == EXIT_SLO and report["status"] == "slo_breached"
    assert [s["status"] for s in report["slo"]] == ["breach", "pass"]
    with cs.open() as f:
        rows = list(csv.DictReader(f))
    assert {"reserve", "commit", "sale", "flow"} <= {r["metric"] for r in rows}
    assert all(
        float(r["p99_ms"]) >= 0 for r in rows if not r["metric"].startswith(("counter:", "error:"))
    )

"""Unit tests of the load-test tool's pure parts: arrival schedules, histogram merging, SLO
parsing and evaluation, the correctness verdict, configuration precedence, pre-flight."""

from __future__ import annotations

import asyncio
import itertools
import json

import pytest

from loadtests import nodes, preflight, verdict
from loadtests.arrival import Stage, parse_duration, parse_stages, schedule, simple_stages
from loadtests.config import PRESETS, build
from loadtests.hist import Histograms
from loadtests.slo import evaluate, parse_slo

# --------------------------------------------------------------------------- arrivals


def test_constant_rate_is_evenly_spaced_and_exact() -> None:
    times = list(schedule([Stage(2.0, 100.0, 100.0)]))
    assert len(times) == 200
    assert times[0] == pytest.approx(0.01)
    assert times[-1] == pytest.approx(2.0)
    gaps = {round(b - a, 9) for a, b in itertools.pairwise(times)}
    assert gaps == {0.01}


def test_ramp_accelerates_and_hits_the_expected_count() -> None:
    times = list(schedule([Stage(10.0, 0.0, 100.0)]))
    assert len(times) == 500  # (0 + 100) / 2 * 10
    assert times == sorted(times)
    first_half = sum(1 for t in times if t < 5.0)
    assert first_half == pytest.approx(125, abs=1)  # a quarter of the arrivals in the first half
    early = times[1] - times[0]
    late = times[-1] - times[-2]
    assert early > 5 * late


def test_stages_chain_and_scale() -> None:
    stages = parse_stages("1s:0->10,2s:10,1s:10->0")
    assert stages == [Stage(1, 0, 10), Stage(2, 10, 10), Stage(1, 10, 0)]
    times = list(schedule(stages))
    assert len(times) == 5 + 20 + 5
    assert times == sorted(times) and times[-1] <= 4.0
    half = list(schedule(stages, scale=0.5))
    assert len(half) == pytest.approx(15, abs=1)


def test_workers_with_phases_interleave_to_the_total_rate() -> None:
    stages = [Stage(1.0, 100.0, 100.0)]
    a = list(schedule(stages, 0.5, 0.0))
    b = list(schedule(stages, 0.5, 0.5))
    merged = sorted(a + b)
    assert len(merged) == 100
    gaps = [y - x for x, y in itertools.pairwise(merged)]
    assert max(gaps) == pytest.approx(0.01) and min(gaps) == pytest.approx(0.01)


def test_durations_and_bad_stages() -> None:
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2m") == 120.0
    assert parse_duration(3) == 3.0
    assert simple_stages(10, 5, 2) == [Stage(2, 0, 10), Stage(5, 10, 10)]
    with pytest.raises(ValueError, match="duration"):
        parse_duration("soon")
    with pytest.raises(ValueError, match="bad stage"):
        parse_stages("10s")
    with pytest.raises(ValueError):
        Stage(-1, 1, 1)


# --------------------------------------------------------------------------- histograms


def test_merged_histograms_equal_one_histogram_of_everything() -> None:
    parts = [Histograms() for _ in range(3)]
    whole = Histograms()
    for i in range(30_000):
        us = (i * 7919) % 50_000 + 1
        parts[i % 3].record_us("reserve", us)
        whole.record_us("reserve", us)
    parts[0].record_us("push", 1234)
    merged = Histograms()
    for p in parts:
        merged.merge(json.loads(json.dumps(p.encode())))  # through the wire format
    assert merged.summary("reserve") == whole.summary("reserve")
    assert merged.count("reserve") == 30_000
    assert merged.count("push") == 1
    s = merged.summary("reserve", seconds=10)
    assert s["rate_per_s"] == 3000.0
    assert s["p50_ms"] == pytest.approx(25.0, rel=0.01)
    assert s["p99_ms"] <= s["p99.9_ms"] <= s["max_ms"]


def test_histogram_clamps_out_of_range_values() -> None:
    h = Histograms()
    h.record_ns("x", 0)
    h.record_us("x", 10**12)
    assert h.count("x") == 2 and h.clamped == 1


# --------------------------------------------------------------------------- SLOs


@pytest.mark.parametrize(
    ("text", "metric", "stat", "op", "value"),
    [
        ("reserve.p99<10ms", "reserve", "p99", "<", 10.0),
        ("push.p99.9 <= 15ms", "push", "p99.9", "<=", 15.0),
        ("commit.max<1s", "commit", "max", "<", 1000.0),
        ("flow.p50<500us", "flow", "p50", "<", 0.5),
        ("errors.rate<0.1%", "errors", "rate", "<", 0.001),
        ("errors.count<=0", "errors", "count", "<=", 0.0),
        ("reserve.rate>=1900", "reserve", "rate", ">=", 1900.0),
        ("broadcast.last<1s", "broadcast", "last", "<", 1000.0),
    ],
)
def test_slo_parsing(text: str, metric: str, stat: str, op: str, value: float) -> None:
    slo = parse_slo(text)
    assert (slo.metric, slo.stat, slo.op) == (metric, stat, op)
    assert slo.value == pytest.approx(value)


@pytest.mark.parametrize(
    "bad", ["reserve<10ms", "reserve.p99", "reserve.p99<10%", "reserve.p101<1ms", "x.rate<1ms"]
)
def test_slo_rejects_nonsense(bad: str) -> None:
    with pytest.raises(ValueError, match="bad SLO"):
        parse_slo(bad)


def test_slo_evaluation_pass_breach_missing() -> None:
    report = {
        "latency": {"reserve": {"count": 10, "p99_ms": 8.0, "max_ms": 30.0, "rate_per_s": 5.0}},
        "counters": {"errors_total": 2, "commands_sent": 1000},
        "broadcast": {"last_receipt_ms": 400.0},
    }
    slos = [
        "reserve.p99<10ms",
        "reserve.max<20ms",
        "push.p99<15ms",
        "errors.rate<0.1%",
        "broadcast.last<1s",
    ]
    got = {r["slo"]: r["status"] for r in evaluate([parse_slo(s) for s in slos], report)}
    assert got == {
        "reserve.p99<10ms": "pass",
        "reserve.max<20ms": "breach",
        "push.p99<15ms": "missing",
        "errors.rate<0.1%": "breach",
        "broadcast.last<1s": "pass",
    }


# --------------------------------------------------------------------------- verdict


def test_session_balances_must_equal_the_ledger() -> None:
    ledger = {"m1": (100, 10, 5), "m2": (50, 0, 2)}
    ok = verdict.check_sessions(
        [("s1", "m1", (100, 10, 90, 5)), ("s2", "m2", (50, 0, 50, 2))], ledger
    )
    assert ok.ok
    stale = verdict.check_sessions(
        [("s1", "m1", (100, 0, 100, 4)), ("s2", "m2", (50, 0, 50, 2))], ledger
    )
    assert not stale.ok and "1 of 2" in stale.detail
    assert stale.samples[0]["session"] == "s1"
    unknown = verdict.check_sessions([("s3", "m9", (0, 0, 0, 0))], ledger)
    assert not unknown.ok
    assert verdict.check_sessions([], ledger).ok


def test_reply_balances_may_trail_but_never_disagree() -> None:
    ledger = {"m1": (100, 0, 5)}
    assert verdict.check_replies({"m1": (100, 0, 100, 5)}, ledger).ok
    trailing = verdict.check_replies({"m1": (90, 0, 90, 4)}, ledger)
    assert trailing.ok and "changed after" in trailing.detail
    assert not verdict.check_replies({"m1": (99, 0, 99, 5)}, ledger).ok
    assert not verdict.check_replies({"m1": (100, 0, 100, 6)}, ledger).ok  # ahead of the ledger


def test_gaps_resumes_ledger_and_overall_verdict() -> None:
    assert verdict.check_gaps(0, 0, 0).ok
    assert verdict.check_gaps(3, 2, 1).ok
    assert not verdict.check_gaps(3, 1, 1).ok
    assert verdict.check_resume(10, 9, 1, 0).ok
    assert not verdict.check_resume(10, 9, 0, 1).ok
    assert not verdict.check_ledger([{"member_id": "m1"}], 5).ok
    v = verdict.verdict(
        [verdict.check_gaps(0, 0, 0), verdict.check_ledger([{"member_id": "m1"}], 5)]
    )
    assert v["ok"] is False and [c["ok"] for c in v["checks"]] == [True, False]


# --------------------------------------------------------------------------- config, pre-flight


def test_precedence_defaults_preset_file_flags(tmp_path: pytest.TempPathFactory) -> None:
    cfg = build("sessions", None, {})
    assert cfg.sessions == PRESETS["sessions"]["sessions"] and cfg.steps == ["sale"]
    toml = tmp_path / "s.toml"  # type: ignore[operator]
    toml.write_text('scenario = "churn"\nrate = 7\nduration = "1m"\nslo = ["reserve.p99<10ms"]\n')
    from loadtests.config import load_file

    cfg = build("checkout", load_file(toml), {"rate": 9.0})
    assert cfg.scenario == "churn" and cfg.rate == 9.0 and cfg.duration == 60.0
    assert cfg.churn_rate == PRESETS["churn"]["churn_rate"] and cfg.slo == ["reserve.p99<10ms"]
    js = tmp_path / "s.json"  # type: ignore[operator]
    js.write_text(
        json.dumps({"url": "http://127.0.0.1:1,http://127.0.0.1:2", "steps": "reserve,commit"})
    )
    cfg = build("checkout", load_file(js), {})
    assert cfg.url == ["http://127.0.0.1:1", "http://127.0.0.1:2"] and cfg.steps == [
        "reserve",
        "commit",
    ]
    for bad in ({"nonsense": 1}, {"steps": ["fly"]}, {"slo": ["p99<1"]}, {"url": ["ftp://x"]}):
        with pytest.raises(ValueError):
            build("checkout", bad, {})


def test_cli_usage_errors_exit_64(capsys: pytest.CaptureFixture[str]) -> None:
    from loadtests.__main__ import main

    assert main(["checkout", "--slo", "reserve<1"]) == 64
    with pytest.raises(SystemExit) as exc:
        main(["checkout", "--rate", "fast"])
    assert exc.value.code == 64
    capsys.readouterr()


def test_preflight_says_what_to_change() -> None:
    ok = preflight.check(1000, 2, ["127.0.0.1"], nofile=(20_000, 20_000))
    assert ok.ok and not ok.advice
    few_fds = preflight.check(50_000, 1, None, nofile=(1024, 4096))
    assert not few_fds.ok
    assert any("ulimit -n" in a for a in few_fds.advice)
    assert any("--workers" in a for a in few_fds.advice)
    rng = preflight.port_range()
    if rng is not None:
        many = preflight.check(10 * (rng[1] - rng[0]), 1000, ["127.0.0.1"], nofile=(10**6, 10**6))
        assert not many.ok and any("ip_local_port_range" in a for a in many.advice)
    assert preflight.auto_source_ips(["http://127.0.0.1:1"], 50_000) == [
        "127.0.0.1",
        "127.0.0.2",
        "127.0.0.3",
    ]
    assert preflight.auto_source_ips(["http://10.0.0.5:1"], 50_000) is None


def test_a_bench_run_keeps_the_hand_written_analysis(tmp_path):
    from loadtests.bench import HAND_WRITTEN, hand_written

    out = tmp_path / "BENCHMARKS.md"
    assert hand_written(out) == ""
    out.write_text(f"# Benchmarks\n\nold figures\n\n{HAND_WRITTEN} (by hand)\n\nwhy it moved\n")
    kept = hand_written(out)
    assert kept == f"\n{HAND_WRITTEN} (by hand)\n\nwhy it moved\n"
    out.write_text("# Benchmarks\n\nnew figures\n" + kept)
    assert "old figures" not in out.read_text() and hand_written(out) == kept


def test_push_matcher_pairs_pushes_with_replies_in_either_order():
    from collections import Counter

    from loadtests.matching import MATCH_WINDOW_NS, PushMatcher
    from protocol.messages import Balance

    hist, counters, recent = Histograms(), Counter(), []
    m = PushMatcher(hist, counters, recent)
    bal = Balance(member="a", posted=10, held=0, available=10, version=3)
    m.reply("a", bal, 1_000_000)
    m.push(("a", 3), 4_000_000)  # 3 ms after the reply
    m.push(("a", 4), 5_000_000)  # before its reply
    assert m.unmatched() == 1
    m.reply("a", Balance(member="a", posted=9, held=0, available=9, version=4), 6_000_000)
    assert m.unmatched() == 0 and counters["push_before_reply"] == 1
    assert recent == [3_000_000, 0]
    assert m.last_replies["a"] == (9, 0, 9, 4)
    m.seen("a", (1, 0, 1, 2))  # an older balance never replaces a newer one
    assert m.last_replies["a"] == (9, 0, 9, 4)
    m.reply("b", Balance(member="b", posted=1, held=0, available=1, version=1), MATCH_WINDOW_NS * 2)
    assert ("a", 3) not in m.reply_at  # forgotten past the window


def test_bench_clusters_run_about_one_ledger_lane_per_two_cores(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GATEWAY_LEDGER_LANES", raising=False)
    assert nodes.lanes_per_node(3, cores=2) == 1
    assert nodes.lanes_per_node(1, cores=2) == 1
    assert nodes.lanes_per_node(2, cores=8) == 2
    monkeypatch.setenv("GATEWAY_LEDGER_LANES", "3")
    assert nodes.lanes_per_node(3, cores=2) == 3


def test_collector_pauses_over_a_stage_are_the_difference_of_two_readings():
    from loadtests.bench_markdown import _gc_lines

    before = {
        "2": {"count": 3.0, "total_ms": 30.0, "mean_ms": 10.0, "over_10ms": 1.0, "over_50ms": 0.0}
    }
    after = {
        "0": {"count": 5.0, "total_ms": 2.5, "mean_ms": 0.5, "over_10ms": 0.0},
        "2": {"count": 5.0, "total_ms": 190.0, "mean_ms": 38.0, "over_10ms": 3.0, "over_50ms": 1.0},
    }
    d = nodes.histogram_delta(before, after)
    assert d["2"] == {
        "count": 2.0,
        "total_ms": 160.0,
        "mean_ms": 80.0,
        "over_10ms": 2.0,
        "over_50ms": 1.0,
    }
    assert d["0"]["count"] == 5.0 and d["0"]["mean_ms"] == 0.5
    (line,) = _gc_lines({"node_gc_pauses": {"bench-a": d}})
    assert "gen 2: 2 pauses, mean 80.00 ms, 2 over 10 ms" in line


def test_ledger_phases_are_read_from_the_nodes_metrics_and_reported_per_phase():
    """The checkout report says where each node's batches spent their time, from the
    gateway's own ``gateway_ledger_batch_seconds`` (a tail in the COMMIT is the disk). Read
    from what the node really renders: its labels come sorted, ``le`` before ``phase``, and a
    reader expecting ``phase`` first counted no batch over 10 ms in a whole bench run."""
    from gateway.metrics import Metrics
    from loadtests.bench_markdown import _gc_lines, _ledger_phase_lines

    m = Metrics()

    def text() -> str:
        rendered = m.render()
        return rendered.decode() if isinstance(rendered, bytes) else rendered

    m.ledger_batch(0.002, 0.003, 0.001)
    before = nodes._histogram(text(), "gateway_ledger_batch_seconds", "phase")
    for commit in (0.0005, 0.03, 0.07, 0.2):
        m.ledger_batch(0.002, 0.004, commit)
    after = nodes._histogram(text(), "gateway_ledger_batch_seconds", "phase")
    d = nodes.histogram_delta(before, after)
    assert d["commit"]["count"] == 4 and d["commit"]["over_10ms"] == 3
    assert d["commit"]["over_50ms"] == 2 and d["statements"]["over_10ms"] == 0
    (line,) = _ledger_phase_lines({"node_ledger_phases": {"bench-a": d}})
    assert line.startswith("Ledger batches on bench-a over the load: 4;")
    assert "3 over 10 ms, 2 over 50 ms" in line
    # and the collector pauses, whose label sorts before ``le``
    m._on_gc("start", {})
    m._on_gc("stop", {"generation": 2})
    gc = nodes._histogram(text(), "gateway_gc_pause_seconds", "generation")
    assert gc["2"]["count"] == 1 and gc["2"]["over_10ms"] == 0
    assert _gc_lines({"node_gc_pauses": {"bench-a": gc}})


async def test_paced_arrivals_keep_the_timetable_and_hand_out_late_ones_at_once():
    import time

    from loadtests.arrival import paced

    t0 = time.monotonic_ns()
    got = [(n, due, now) async for n, due, now in paced([Stage(0.1, 100.0, 100.0)], t0)]
    assert [n for n, _, _ in got] == list(range(10))
    assert all(now >= due for _, due, now in got)  # never sent before its time
    assert [due for _, due, _ in got] == [t0 + int(k / 100 * 1e9) for k in range(1, 11)]
    # started a second late: every arrival is due already and comes out without sleeping
    late = [x async for x in paced([Stage(0.1, 100.0, 100.0)], t0 - 1_000_000_000)]
    assert len(late) == 10 and all(now - due > 800_000_000 for _, due, now in late)


def test_the_speed_probe_times_a_fixed_workload_and_the_report_shows_its_spread() -> None:
    from loadtests import speed
    from loadtests.bench_markdown import markdown

    ms = speed.probe_ms(rounds=3, n=20_000)
    assert 0 < ms < 10_000
    assert speed._work(1000) == speed._work(1000)  # the same work every time
    assert speed.spread({"checkout": 20.0, "push": 25.0, "ledger": 22.0}) == 1.25
    assert speed.spread({}) is None
    r = {
        "date": "2026-11-24T00:00:00+00:00", "profile": "full", "nodes": 3,
        "sizes": {"checkout_rate": 2000, "push_rate": 1000},
        "machine": {"cores": 2, "memory_gib": 24, "kernel": "x", "python": "3.11", "postgres": "15", "redis": "7"},
        "speed_probe_ms": {"checkout": 20.0, "push": 25.0},
    }  # fmt: skip
    md = markdown(r)
    assert "checkout 20.0 ms, push 25.0 ms" in md
    assert "The slowest reading was 1.25x the fastest" in md
    del r["speed_probe_ms"]
    assert "Machine speed" not in markdown(r)


# --------------------------------------------------------------------------- verdict accounting
# Found in review: each of these let a run report a pass it had not measured.


class _TimingOutLink:
    """A link whose protocol session is real and whose requests all time out."""

    def __init__(self, name: str) -> None:
        from protocol.client import ClientSession

        self.proto = ClientSession(name)
        self.open = True

    async def request(self, frame: object, timeout: float) -> object:
        self.proto.send(frame)  # type: ignore[arg-type]
        raise TimeoutError


def _subscribed(link: _TimingOutLink, member: str, version: int, recovered: bool) -> bytes:
    from protocol.codec import encode
    from protocol.messages import Balance, Result, Subscribed

    rid = f"{link.proto._prefix}{link.proto._counter}"
    balance = Balance(member=member, posted=version, held=0, available=version, version=version)
    return encode(
        Result(id=rid, data=Subscribed(member=member, balance=balance, recovered=recovered))
    )


async def test_a_gap_whose_fill_fails_fails_the_verdict_and_counts_as_an_error() -> None:
    """A gap fill that timed out was only noted, and any ``recovered=false`` reply (a churn's
    resume, say) counted as the gap's resync, twice: the run passed with a silent gap."""
    from loadtests.worker import Watcher, Worker
    from protocol.codec import encode
    from protocol.messages import BalanceChanged, Cause

    spec = {
        "config": {"timeout": 1, "url": ["http://x"]},
        "index": 0,
        "count": 1,
        "run": "r",
        "merchant": "m",
        "members": ["a", "b"],
        "secret": "s",
    }
    w = Worker(spec, None)  # type: ignore[arg-type]
    la, lb = _TimingOutLink("la"), _TimingOutLink("lb")
    wa, wb = Watcher(0, "a", la), Watcher(1, "b", lb)  # type: ignore[arg-type]
    w.by_link = {id(la): wa, id(lb): wb}
    w.watchers = [wa, wb]
    la.proto.subscribe("a")
    w.on_events(la, la.proto.receive(_subscribed(la, "a", 1, True)), 0)  # type: ignore[arg-type]
    change = BalanceChanged(
        member="a",
        posted=3,
        held=0,
        available=3,
        version=3,
        cause=Cause(kind="earn", op="o3"),
        at=0,
    )
    w.on_events(la, la.proto.receive(encode(change)), 0)  # type: ignore[arg-type]  # 2 missed
    await asyncio.sleep(0.05)  # its fill times out
    lb.proto.subscribe("b", since=0)  # another session's resume, answered recovered=false
    w.on_events(lb, lb.proto.receive(_subscribed(lb, "b", 5, False)), 0)  # type: ignore[arg-type]
    c = w.counters
    assert (c["gaps"], c["gaps_recovered"], c["gaps_resynced"], c["resyncs"]) == (1, 0, 0, 0)
    assert not verdict.check_gaps(c["gaps"], c["gaps_recovered"], c["gaps_resynced"]).ok
    assert c["errors_total"] == 1 and w.errors["gap_fill:failed"] == 1
    # a later subscribe with since (the resume of a reconnect) answers the open gap, once
    la.proto.subscribe("a", since=3)
    w.on_events(la, la.proto.receive(_subscribed(la, "a", 4, False)), 0)  # type: ignore[arg-type]
    assert (c["gaps_recovered"], c["gaps_resynced"]) == (0, 1)
    assert verdict.check_gaps(c["gaps"], c["gaps_recovered"], c["gaps_resynced"]).ok


def test_rates_count_what_was_tried() -> None:
    """late and dropped were divided by commands (four per flow), so 10 % of flows late read
    as 2.5 %; a churn-only run whose reconnects all failed read 0 % errors and exited 0."""
    from loadtests.runner import Run
    from loadtests.slo import evaluate, parse_slo

    flows = {"scheduled": 100, "late": 10, "dropped": 0, "commands_sent": 400, "errors_total": 0}
    assert not evaluate([parse_slo("late.rate<5%")], {"counters": flows})[0]["ok"]
    dropped = {**flows, "late": 0, "dropped": 10}
    assert not evaluate([parse_slo("dropped.rate<5%")], {"counters": dropped})[0]["ok"]
    churn = {"scheduled": 0, "commands_sent": 0, "reconnects_attempted": 200, "errors_total": 200}
    report = {
        "counters": churn,
        "errors": {"reconnect:timeout": 200},
        "verdict": verdict.verdict([verdict.check_gaps(0, 0, 0)]),
        "connections": {"sessions_asked": 10},
        "latency": {},
    }
    report["slo"] = evaluate([parse_slo("errors.rate<0.1%")], report)
    assert not report["slo"][0]["ok"]
    cfg = build("churn", None, {"rate": 0.0})
    assert Run(cfg).exit_code(report)[1] != "pass"
    nothing = {**report, "counters": {**churn, "reconnects_attempted": 0}}
    assert Run(cfg).exit_code(nothing)[1] != "pass"  # errors, nothing tried: not a pass


def test_the_report_puts_the_one_node_checkout_and_the_cluster_checkout_side_by_side() -> None:
    from loadtests.bench_markdown import markdown

    def stage(nodes: int, p99: float) -> dict[str, object]:
        row = {
            "count": 10,
            "p50_ms": 1.0,
            "p90_ms": 2.0,
            "p99_ms": p99,
            "p99.9_ms": 9.0,
            "max_ms": 9.0,
        }
        return {"nodes": nodes, "lanes_per_node": 1, "latency": {"reserve": row, "commit": row}}

    r = {
        "date": "2026-11-24T00:00:00+00:00", "profile": "full", "nodes": 3,
        "sizes": {"checkout_rate": 2000, "push_rate": 1000},
        "machine": {"cores": 2, "memory_gib": 24, "kernel": "x", "python": "3.11", "postgres": "15", "redis": "7"},
        "checkout": stage(1, 8.5), "cluster": stage(3, 31.0),
    }  # fmt: skip
    md = markdown(r)
    assert (
        "| reserve→reply p99 at 2,000 reserve+commit flows/s, 1 node(s) | ≤ 10 ms | 8.50 ms | PASS |"
        in md
    )
    assert (
        "| commit→reply p99 at 2,000 reserve+commit flows/s, 3 node(s) | ≤ 10 ms | 31.00 ms | MISS |"
        in md
    )
    assert "## Checkout over every node: the same load, spread" in md
    del r["cluster"]
    md = markdown(r)
    assert "3 node(s) | ≤ 10 ms" not in md and "Checkout over every node" not in md

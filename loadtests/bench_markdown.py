"""The markdown of ``python -m loadtests bench`` (what BENCHMARKS.md starts with), built from the
results dict that ``loadtests/bench.py`` also writes as JSON."""

from __future__ import annotations

import json
from typing import Any

from loadtests import speed


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:,.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def _verdict(
    actual: float | None, target: float, lower_is_better: bool = True, measured: bool = True
) -> str:
    if actual is None:
        return "not measured"
    ok = actual <= target if lower_is_better else actual >= target
    if not measured:
        return ("pass" if ok else "miss") + " (below target size)"
    return "PASS" if ok else "MISS"


def _speed_lines(readings: dict[str, float]) -> list[str]:
    if not readings:
        return []
    each = ", ".join(f"{k} {_f(v, 1)} ms" for k, v in readings.items())
    return [
        "",
        f"Machine speed before each stage (`loadtests/speed.py`: a fixed pure-Python workload, "
        f"median of 5; lower is faster): {each}. The slowest reading was "
        f"{speed.spread(readings)}x the fastest. Compare runs only where these agree.",
    ]


def markdown(r: dict[str, Any]) -> str:
    s = r["sizes"]
    m = r["machine"]
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `python -m loadtests bench{' --quick' if r['profile'] == 'quick' else ''}` on "
        f"{r['date'][:16].replace('T', ' ')} UTC at commit {r.get('commit', '?')} ({r['profile']} profile, {r.get('wall_seconds', '?')} s wall): {m['cores']} cores, "
        f"{m['memory_gib']} GiB, Linux {m['kernel']}, Python {m['python']}, {m['postgres']}, {m['redis']}. "
        f"{r['nodes']} gateway nodes, the load generator, PostgreSQL and Redis all share this machine: "
        "every figure includes the generator's own CPU. Latencies are open-loop, measured from each "
        "send's scheduled time (HdrHistogram, merged across generator processes). "
        "Regenerate with `make bench` (full, ~10 min) or `python -m loadtests bench --quick`.",
        *_speed_lines(r.get("speed_probe_ms") or {}),
        "",
        "## Against the issue's targets",
        "",
        "| figure | target | measured | |",
        "|---|---|---|---|",
    ]
    co = r.get("checkout") or {}
    cl = r.get("cluster") or {}
    for stage in (co, cl):
        lat = stage.get("latency") or {}
        for step in ("reserve", "commit") if lat else ():
            x = lat.get(step) or {}
            lines.append(
                f"| {step}→reply p99 at {_f(s['checkout_rate'], 0)} reserve+commit flows/s, "
                f"{stage.get('nodes', r['nodes'])} node(s) | ≤ 10 ms | "
                f"{_f(x.get('p99_ms'), 2)} ms | {_verdict(x.get('p99_ms'), 10.0)} |"
            )
    pu = r.get("push") or {}
    px = (pu.get("latency") or {}).get("push") or {}
    asked = (pu.get("connections") or {}).get("sessions_asked")
    per_member = s.get("push_sessions_per_member") or (
        asked // s["push_members"] if asked and s.get("push_members") else 3
    )
    lines.append(
        f"| push commit-reply→receipt p99 at {_f(s['push_rate'], 0)} changes/s, {r['nodes']} nodes, "
        f"{per_member} sessions/member | ≤ 15 ms | {_f(px.get('p99_ms'), 2)} ms | {_verdict(px.get('p99_ms'), 15.0)} |"
    )
    pe = r.get("peer") or {}
    pp = (pe.get("latency") or {}).get("push") or {}
    if pp.get("p50_ms") and px.get("p50_ms"):
        lines.append(
            f"| push p50 / p99 against the Socket.IO (Node) peer, same load, same run | beat it | "
            f"{_f(px.get('p50_ms'), 2)} / {_f(px.get('p99_ms'), 2)} ms vs {_f(pp['p50_ms'], 2)} / "
            f"{_f(pp.get('p99_ms'), 2)} ms ({px['p50_ms'] / pp['p50_ms']:.1f}x / "
            f"{(px.get('p99_ms') or 0) / (pp.get('p99_ms') or 1):.1f}x) | "
            f"{_verdict(px.get('p99_ms'), pp.get('p99_ms') or 0.0)} |"
        )
    idle = r.get("idle") or {}
    held1 = idle.get("held")
    lines.append(
        f"| idle sessions held by one gateway process | ≥ 20,000 | {_f(held1)} (asked {_f(idle.get('asked'))}) | "
        f"{_verdict(held1, 20_000, False, (idle.get('asked') or 0) >= 20_000)} |"
    )
    bc = r.get("broadcast") or {}
    lines.append(
        f"| idle sessions across {r['nodes']} processes | ≥ 50,000 | {_f(bc.get('held'))} (asked {_f(bc.get('asked'))}) | "
        f"{_verdict(bc.get('held'), 50_000, False, (bc.get('asked') or 0) >= 50_000)} |"
    )
    b = bc.get("broadcast") or {}
    last = b.get("last_receipt_ms")
    if b.get("supported") is False:
        lines.append(
            "| broadcast to 50,000 sessions, last receipt | < 1 s | unsupported (404) | - |"
        )
    else:
        lines.append(
            f"| broadcast to {_f(bc.get('held'))} sessions, time to last receipt (median of rounds) | < 1 s (at 50,000) | "
            f"{_f(last)} ms | {_verdict(last, 1000.0, True, (bc.get('held') or 0) >= 50_000)} |"
        )
    lines += ["", "## Checkout: reserve + commit flows, open-loop", ""]
    lines += _checkout_section(co, r["nodes"])
    if cl:
        lines += ["", "## Checkout over every node: the same load, spread", ""]
        lines += _checkout_section(cl, r["nodes"])
    lines += ["", "## Push: commit reply to receipt on another node's session", ""]
    if pu.get("lanes_per_node"):
        lines += [f"{r['nodes']} gateway nodes, {pu['lanes_per_node']} ledger lane(s) each.", ""]
    lines += _latency_table(pu, ("sale", "push", "connect"))
    lines += _run_notes(pu)
    if pu.get("node_cpu_percent_of_core"):
        lines.append(
            f"Gateway nodes' CPU over the load (% of a core): {pu['node_cpu_percent_of_core']}."
        )
    lines += _gc_lines(pu)
    lines += ["", "## Push on the Socket.IO peer: the same load, same run", ""]
    lines += _peer_section(pe, px)
    lines += ["", "## Idle sessions", ""]
    if idle.get("error"):
        lines.append(f"One process: failed: {idle['error']}")
    elif idle:
        lines.append(
            f"One process: {_f(held1)} sessions held (asked {_f(idle.get('asked'))}; the node's open-files limit is "
            f"{_f(idle.get('node_fd_limit'))} and it uses {_f(idle.get('node_fds_at_start'))} before any session, so "
            f"it can hold at most {_f(idle.get('cap'))}), connected in {_f(idle.get('connect_seconds'))} s; "
            f"RSS {_f(idle.get('rss_before_mb'))} → {_f(idle.get('rss_after_mb'))} MB = "
            f"**{_f(idle.get('rss_per_session_kb'))} KB per idle session**; CPU at idle "
            f"{_f(idle.get('cpu_idle_percent_of_core'))} % of one core over {_f(idle.get('cpu_window_s'), 0)} s (heartbeat pings every 15 s)."
        )
    if bc.get("error"):
        lines.append(f"\nAll processes: failed: {bc['error']}")
    elif bc:
        lines.append(
            f"\nAll {r['nodes']} processes: {_f(bc.get('held'))} sessions held (asked {_f(bc.get('asked'))}) from "
            f"{_f(bc.get('workers'))} generator processes, connected in {_f(bc.get('connect_seconds'))} s; "
            f"RSS per session {_f(bc.get('rss_per_session_kb'))} KB; RSS per node {bc.get('rss_mb')} MB; "
            f"CPU at idle per node (% of a core) {bc.get('cpu_idle_percent_of_core')}."
        )
        if bc.get("errors"):
            lines.append(f"Connection errors: {bc['errors']}.")
        for node_id, gens in sorted((bc.get("gc_pauses") or {}).items()):
            parts = ", ".join(
                f"gen {g}: {_f(x['count'], 0)} pauses, mean {_f(x['mean_ms'])} ms"
                for g, x in sorted(gens.items())
            )
            lines.append(f"Collector pauses on {node_id} over the stage (wall time): {parts}.")
    lines += ["", "## Broadcast: one notice to every session", ""]
    naive = bc.get("naive") or {}
    if b.get("supported") is False:
        lines.append("The gateway answered 404 for POST /admin/broadcast: unsupported.")
    elif b:
        for rd in b.get("rounds", []):
            lines.append(
                f"- gateway round {rd['marker'][-1]}: {_f(rd['received'])}/{_f(rd['sessions'])} sessions, "
                f"last receipt {_f(rd['last_receipt_ms'])} ms (HTTP reply {_f(rd['reply_ms'])} ms)"
            )
        bl = bc.get("broadcast_latency") or {}
        lines.append(
            f"- gateway per-session receipt: p50 {_f(bl.get('p50_ms'))} ms, p99 {_f(bl.get('p99_ms'))} ms"
        )
        if naive.get("error"):
            lines.append(f"- naive loop: failed: {naive['error']}")
        elif naive:
            for i, rd in enumerate(naive.get("rounds", [])):
                lines.append(
                    f"- naive aiohttp loop round {i}: {_f(rd['received'])}/{_f(naive.get('sessions'))} sessions over "
                    f"{naive.get('servers')} processes, last receipt {_f(rd['last_receipt_ms'])} ms"
                )
            if last and naive.get("last_receipt_ms"):
                lines.append(
                    f"- **ratio gateway / naive (median last receipt): {last / naive['last_receipt_ms']:.2f}x** "
                    f"({_f(last)} ms vs {_f(naive['last_receipt_ms'])} ms)"
                )
    lines += ["", "## Baselines (same run, same machine)", ""]
    base = r.get("baselines") or {}
    pg = base.get("pgbench") or {}
    rd_ = base.get("redis") or {}
    ledger_ops = None
    co_lat = co.get("latency") or {}  # the one-node checkout's, whatever stage ran after it
    if co_lat.get("reserve"):
        steps = [co_lat["reserve"], co_lat.get("commit") or {}]
        if all(x.get("rate_per_s") is not None for x in steps):  # over the recorded window
            ledger_ops = sum(x["rate_per_s"] for x in steps)
        elif co.get("duration_s"):
            ledger_ops = sum(x.get("count") or 0 for x in steps) / co["duration_s"]
    lines.append("| path | baseline | baseline figure | gateway figure | ratio |")
    lines.append("|---|---|---|---|---|")
    if pg.get("tps"):
        lines.append(
            f"| ledger | pgbench, 16 clients, {pg.get('seconds')} s: {pg['what']} | {_f(pg['tps'])} tx/s, "
            f"avg {_f(pg.get('latency_avg_ms'), 2)} ms | {_f(ledger_ops)} ledger ops/s (reserve+commit replies) | "
            f"{(ledger_ops or 0) / pg['tps']:.2f}x |"
        )
    elif pg:
        lines.append(f"| ledger | pgbench | {pg.get('error', '-')} | | |")
    for key, label in (("eval_hold", "EVAL check-and-hold, 50 clients"), ("eval_hold_pipelined16", "same, pipelined 16"),
                       ("publish", "PUBLISH 160 B, 50 clients")):  # fmt: skip
        x = rd_.get(key) or {}
        if x.get("ops_per_s"):
            ratio = f"{(ledger_ops or 0) / x['ops_per_s']:.3f}x" if key != "publish" else "-"
            gw = (
                f"{_f(ledger_ops)} ledger ops/s"
                if key != "publish"
                else f"{_f((pu.get('throughput') or {}).get('pushes_per_s'))} pushes/s delivered"
            )
            lines.append(
                f"| Redis | redis-benchmark {label} | {_f(x['ops_per_s'])} ops/s (p50 {_f(x.get('p50_ms'), 3)} ms) | {gw} | {ratio} |"
            )
    if naive.get("last_receipt_ms"):
        lines.append(
            f"| fan-out | naive aiohttp `send_str` loop, {_f(naive.get('sessions'))} sessions | "
            f"{_f(naive['last_receipt_ms'])} ms to last receipt | {_f(last)} ms | "
            f"{(last or 0) / naive['last_receipt_ms']:.2f}x |"
        )
    led = r.get("ledger") or {}
    if led:
        lines += ["", "## Ledger engine (loadtests.ledger_bench)", ""]
        if led.get("markdown"):
            lines.append(led["markdown"].strip())
        elif "result" in led:
            res = led["result"]
            if isinstance(res, str):
                lines.append(res)
            elif isinstance(res, dict):
                lines += ["| figure | value |", "|---|---|"] + [
                    f"| {k} | {_f(v)} |" for k, v in res.items()
                ]
            else:
                lines.append(f"```\n{json.dumps(res, indent=2, default=str)}\n```")
        else:
            lines.append(led.get("skipped") or led.get("error") or "")
    lines += [
        "",
        "## Reading these figures",
        "",
        "- Two cores run everything: three gateway processes, PostgreSQL, Redis and the generator. "
        "A figure that misses its target here says what this box does, not what the design can do "
        "on dedicated hosts; compare ratios to the baselines, and repeat runs (VM steal time moves "
        "tails from run to run).",
        "- `late` sends left more than 5 ms after their scheduled time (the generator fell behind); "
        "`dropped` were not sent at all (too many in flight). Either means the generator, not only "
        "the gateway, was saturated: the latencies still count from the scheduled time.",
        "- See loadtests/README.md for what every number means and how to size from them.",
    ]
    return "\n".join(lines) + "\n"


def _checkout_section(co: dict[str, Any], default_nodes: int) -> list[str]:
    lines: list[str] = []
    if co:
        lanes = co.get("lanes_per_node")
        each = f", {lanes} ledger lane(s) each (`GATEWAY_LEDGER_LANES`)" if lanes else ""
        lines += [f"{co.get('nodes', default_nodes)} gateway node(s){each}.", ""]
    lines += _latency_table(co, ("reserve", "commit", "flow"))
    lines += _run_notes(co)
    lines += _gc_lines(co)
    lines += _ledger_phase_lines(co)
    return lines


def _gc_lines(stage: dict[str, Any]) -> list[str]:
    """Each node's collector pauses over a stage's load (wall time, from its /metrics)."""
    out = []
    for node_id, gens in sorted((stage.get("node_gc_pauses") or {}).items()):
        parts = ", ".join(
            f"gen {g}: {_f(x['count'], 0)} pauses, mean {_f(x['mean_ms'], 2)} ms, "
            f"{_f(x.get('over_10ms', 0), 0)} over 10 ms"
            for g, x in sorted(gens.items())
        )
        out.append(f"Collector pauses on {node_id} over the load: {parts}.")
    return out


def _ledger_phase_lines(stage: dict[str, Any]) -> list[str]:
    """Each node's ledger batches over a stage's load by phase (from its /metrics): a tail
    from the COMMIT (the WAL flush: the disk) reads differently from one in the statements
    (locks) or the queue (a lane that cannot keep up)."""
    names = {"queue": "queue", "statements": "statements", "commit": "COMMIT (WAL flush)"}
    out = []
    for node_id, phases in sorted((stage.get("node_ledger_phases") or {}).items()):
        parts = ", ".join(
            f"{names[p]} mean {_f(x['mean_ms'], 2)} ms, {_f(x['over_10ms'], 0)} over 10 ms, "
            f"{_f(x.get('over_50ms', 0), 0)} over 50 ms"
            for p, x in ((p, phases[p]) for p in names if p in phases)
        )
        count = _f(max((x["count"] for x in phases.values()), default=0), 0)
        out.append(f"Ledger batches on {node_id} over the load: {count}; {parts}.")
    return out


def _peer_section(pe: dict[str, Any], ours: dict[str, Any]) -> list[str]:
    if not pe:
        return ["Not run."]
    if pe.get("error"):
        return [f"Not measured: {pe['error']}"]
    c = pe.get("counters") or {}
    lines = [
        f"{pe.get('peer')}: {pe.get('nodes')} server processes over the same Redis, "
        f"{_f(pe.get('sessions'))} sessions on {_f(pe.get('members'))} members, "
        f"{_f(pe.get('rate'), 0)} changes/s for {_f(pe.get('seconds'), 0)} s, driven by the same "
        "generator processes and client stack (aiohttp websockets) as the push stage "
        "(`loadtests/peer.py`). A change is a `change` event with an ack; the server emits it to "
        "the member's room and acks; `push` runs from the ack's receipt to each session's receipt, "
        "as ours runs from the commit reply. The peer has no ledger, versions or recovery behind it.",
        "",
    ]
    lines += _latency_table(pe, ("ack", "push"))
    lines.append(
        f"\nPublished {_f(c.get('published'))}, expected receipts {_f(c.get('expected_receipts'))}, "
        f"lost {_f(c.get('lost', 0))}, out of order {_f(c.get('out_of_order', 0))}, late sends "
        f"{_f(c.get('late', 0))}; server CPU over the load (% of a core) {pe.get('cpu_percent_of_core')}, "
        f"RSS {pe.get('rss_mb')} MB."
    )
    pp = (pe.get("latency") or {}).get("push") or {}
    if pp.get("p50_ms") and ours.get("p50_ms"):
        lines.append(
            f"\n**Gateway / peer push: p50 {ours['p50_ms'] / pp['p50_ms']:.1f}x, "
            f"p99 {(ours.get('p99_ms') or 0) / (pp.get('p99_ms') or 1):.1f}x** "
            "(below 1 means the gateway is faster)."
        )
    return lines


def _latency_table(stage: dict[str, Any], names: tuple[str, ...]) -> list[str]:
    if not stage:
        return ["not run"]
    if stage.get("error"):
        return [f"failed: {stage['error']}"]
    lat = stage.get("latency") or {}
    out = [
        "| metric | count | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for n in names:
        x = lat.get(n)
        if x:
            out.append(
                f"| {n} | {_f(x['count'])} | {_f(x['p50_ms'], 2)} | {_f(x['p90_ms'], 2)} | {_f(x['p99_ms'], 2)} | "
                f"{_f(x['p99.9_ms'], 2)} | {_f(x['max_ms'], 2)} |"
            )
    return out


def _run_notes(stage: dict[str, Any]) -> list[str]:
    if not stage or stage.get("error"):
        return []
    c = stage.get("counters") or {}
    t = stage.get("throughput") or {}
    v = stage.get("verdict") or {}
    notes = [
        "",
        f"Offered {_f(stage.get('offered_rate_per_s'))}/s over {_f(stage.get('duration_s'))} s; achieved "
        f"{_f(t.get('flows_per_s'))} flows/s, {_f(t.get('commands_per_s'))} commands/s, "
        f"{_f(t.get('pushes_per_s'))} pushes/s delivered; late {_f(c.get('late', 0))}, dropped "
        f"{_f(c.get('dropped', 0))}, errors {_f(c.get('errors_total', 0))}"
        + (f" ({stage['errors']})" if stage.get("errors") else "")
        + f"; {stage.get('workers')} generator processes.",
        f"Correctness verdict: **{'correct' if v.get('ok') else 'INCORRECT'}** — "
        + "; ".join(f"{ch['name']}: {ch['detail']}" for ch in v.get("checks", [])),
    ]
    return notes

"""Run reports: a text summary for the terminal, JSON (everything) and CSV (latencies)."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

CSV_FIELDS = [
    "metric",
    "count",
    "rate_per_s",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "p99.9_ms",
    "max_ms",
    "mean_ms",
]


def write_files(
    report: dict[str, Any], json_path: str | None, csv_path: str | None, out_dir: str | None
) -> list[str]:
    if out_dir and not (json_path or csv_path):
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
        base = Path(out_dir) / f"{report['scenario']}-{stamp}-{report.get('run', '')}"
        base.parent.mkdir(parents=True, exist_ok=True)
        json_path, csv_path = f"{base}.json", f"{base}.csv"
    written = []
    if json_path:
        Path(json_path).write_text(json.dumps(report, indent=2, default=str) + "\n")
        written.append(json_path)
    if csv_path:
        with open(csv_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS, extrasaction="ignore")
            w.writeheader()
            for name, row in report.get("latency", {}).items():
                w.writerow({"metric": name, **row})
            for name, value in sorted(report.get("counters", {}).items()):
                w.writerow({"metric": f"counter:{name}", "count": value})
            for name, value in report.get("errors", {}).items():
                w.writerow({"metric": f"error:{name}", "count": value})
        written.append(csv_path)
    return written


def _ms(v: Any) -> str:
    return "-" if v is None else f"{v:.2f}"


def text(report: dict[str, Any]) -> str:
    lines = [
        f"scenario {report['scenario']} (run {report.get('run')}), {report['workers']} workers, "
        f"{report['duration_s']:.1f} s, offered {report['offered_rate_per_s']}/s",
        "throughput: " + ", ".join(f"{k} {v}" for k, v in report["throughput"].items()),
        "",
        f"{'latency (ms)':<14}{'count':>9}{'p50':>9}{'p90':>9}{'p99':>9}{'p99.9':>9}{'max':>9}",
    ]
    for name, s in report["latency"].items():
        lines.append(
            f"{name:<14}{s['count']:>9}{_ms(s['p50_ms']):>9}{_ms(s['p90_ms']):>9}"
            f"{_ms(s['p99_ms']):>9}{_ms(s['p99.9_ms']):>9}{_ms(s['max_ms']):>9}"
        )
    c = report["counters"]
    lines += [
        "",
        f"sends: scheduled {c.get('scheduled', 0)}, late {c.get('late', 0)}, dropped {c.get('dropped', 0)}, "
        f"commands {c.get('commands_sent', 0)}, errors {c.get('errors_total', 0)}",
        "connections: " + ", ".join(f"{k} {v}" for k, v in report["connections"].items()),
    ]
    if report["errors"]:
        lines.append(
            "errors by code: " + ", ".join(f"{k} {v}" for k, v in report["errors"].items())
        )
    bc = report.get("broadcast") or {}
    if bc:
        if bc.get("supported") is False:
            lines.append("broadcast: unsupported by this deployment (POST /admin/broadcast 404)")
        else:
            for r in bc.get("rounds", []):
                lines.append(
                    f"broadcast {r['marker']}: {r['received']}/{r['sessions']} sessions, "
                    f"last receipt {_ms(r['last_receipt_ms'])} ms (HTTP {r['status']})"
                )
    v = report["verdict"]
    lines.append("")
    lines.append(f"verdict: {'CORRECT' if v['ok'] else 'INCORRECT'}")
    for chk in v["checks"]:
        lines.append(f"  [{'ok' if chk['ok'] else 'FAIL'}] {chk['name']}: {chk['detail']}")
        for s in chk["samples"][:3]:
            lines.append(f"        e.g. {s}")
    for s in report["slo"]:
        lines.append(f"  SLO {s['slo']}: {s['status'].upper()} (actual {s['actual']})")
    lines.append(f"status: {report['status']} (exit {report['exit_code']})")
    return "\n".join(lines)


def emit(result: dict[str, Any], path: str | None) -> None:
    """A bench's figures: printed as JSON and, with ``path`` (``--json``), written there too."""
    text = json.dumps(result, indent=2)
    print(text)
    if path:
        Path(path).write_text(text + "\n")

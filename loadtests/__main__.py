"""``python -m loadtests SCENARIO [flags]`` / ``loyalty-loadtest``; also ``seed``, ``preflight``
and ``bench``. See loadtests/README.md; exit codes are in ``loadtests.runner``."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import sys
from typing import Any, NoReturn

from loadtests.config import DURATIONS, PRESETS, SCENARIOS, Config, build, load_file

EXIT_USAGE = 64

HELP = {
    "url": "gateway node base URL(s), comma-separated or repeated (default http://127.0.0.1:8080)",
    "database_url": "PostgreSQL of the deployment: seed members and check the ledger directly",
    "members_file": "members seeded earlier (`seed --out FILE`); then no database is needed",
    "jwt_secret": "token secret (default: $GATEWAY_JWT_SECRET, else the dev secret)",
    "admin_token": "admin bearer token for /admin/broadcast (default $GATEWAY_ADMIN_TOKEN or dev)",
    "merchant": "merchant id to seed (default lt<run>)",
    "members": "members to seed and drive",
    "seed_points": "starting balance of each seeded member",
    "sessions": "app/web sessions held open, spread over the members (3 per member: 3x members)",
    "terminals": "POS terminals (default: enough for the rate under 100 commands/s each)",
    "rate": "open-loop arrivals per second: sale flows (checkout/mixed) or changes (sessions/churn)",
    "duration": "seconds at full rate (30, 30s, 2m)",
    "ramp": "seconds of linear ramp from 0 to --rate before --duration",
    "stages": "explicit stages, overriding rate/duration/ramp: '10s:0->2000,60s:2000,5s:2000->0'",
    "warmup": "seconds from the start whose sends are made but not recorded (e.g. = --ramp)",
    "steps": "flow steps, comma-separated from lookup,reserve,commit,sale,wallet (lookup = balance in v1; wallet through the member's app session)",
    "release_fraction": "fraction of holds released instead of committed",
    "points": "points reserved per flow",
    "sale_total": "sale total in minor units (points earned = total/100: the seeded merchant is USD, rate 1)",
    "churn_rate": "session disconnect+resume per second",
    "churn_down": "seconds a churned session stays away before resuming",
    "broadcast_count": "broadcasts to send (POST /admin/broadcast)",
    "broadcast_interval": "seconds between broadcasts",
    "workers": "load-generator processes (default: min(cores, 4), more for many sessions)",
    "source_ips": "client source addresses, comma-separated (default 127.0.0.1..n for loopback)",
    "timeout": "seconds before a command counts as a timeout error",
    "max_inflight": "flows in flight per worker before new arrivals are dropped (and counted)",
    "late_ms": "a send this many ms after its scheduled time counts as late",
    "quiesce": "seconds sessions get to catch up after the load before the verdict",
    "connect_concurrency": "connection attempts in flight per worker during setup",
    "setup_timeout": "seconds allowed for setup (default 30 + sessions/200)",
    "slo": "SLO, repeatable: 'reserve.p99<10ms', 'push.p99.9<=15ms', 'errors.rate<0.1%%'",
    "max_error_rate": "errors (and dropped sends) per command above which the run fails (exit 2)",
    "out": "directory for <scenario>-<time>.json/.csv (default loadtest-results)",
    "json": "write the JSON report here",
    "csv": "write the CSV latencies here",
}


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` shows each flag's default, except where its text says it already or there is
    none to show (``None``, a flag that is off, a default left to the scenario file)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        none = action.default is None or action.default is False
        if none or action.default is argparse.SUPPRESS or "default" in text:
            return text
        return super()._get_help_string(action) or text


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Help)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def _shown(value: Any) -> str:
    text = ",".join(map(str, value)) if isinstance(value, list) else str(value)
    return text.replace("%", "%%")  # argparse formats help text with %


def _add_config_flags(p: argparse.ArgumentParser, scenario: str | None) -> None:
    """The scenario flags. Their parsed default stays unset (a scenario file's value must win
    over a flag not given), so the help says the scenario's default itself."""
    defaults = {**dataclasses.asdict(Config()), **PRESETS[scenario]} if scenario else {}
    p.add_argument("--file", "-f", help="scenario file (TOML, or JSON by .json suffix)")
    for name, help_ in HELP.items():
        flag = "--" + name.replace("_", "-")
        value = defaults.get(name)
        if value not in (None, "", []) and "default" not in help_:
            help_ = f"{help_} (default: {_shown(value)})"
        field_type = Config.__dataclass_fields__[name].type
        if name in ("url", "slo", "source_ips", "steps"):
            p.add_argument(flag, action="append", default=argparse.SUPPRESS, help=help_)
        elif "int" in str(field_type) and "float" not in str(field_type):
            p.add_argument(flag, type=int, default=argparse.SUPPRESS, help=help_)
        elif "float" in str(field_type) and name not in DURATIONS:
            p.add_argument(flag, type=float, default=argparse.SUPPRESS, help=help_)
        else:
            p.add_argument(flag, default=argparse.SUPPRESS, help=help_)
    p.add_argument(
        "--no-progress", dest="progress", action="store_false", default=argparse.SUPPRESS
    )


def _flags(ns: argparse.Namespace) -> dict[str, Any]:
    skip = {"cmd", "file"}
    out = {k: v for k, v in vars(ns).items() if k not in skip}
    for k in ("url", "source_ips", "steps"):
        if k in out:
            out[k] = [x.strip() for v in out[k] for x in v.split(",") if x.strip()]
    return out


def parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m loadtests", description="Load tests for the loyalty gateway.")
    sub = p.add_subparsers(dest="cmd", required=True, parser_class=_Parser)
    for name in SCENARIOS:
        s = sub.add_parser(name, help=f"run the {name} scenario")
        _add_config_flags(s, name)
    s = sub.add_parser(
        "run",
        help="run the scenario named in --file",
        description="Defaults are the named scenario's: python -m loadtests <scenario> --help.",
    )
    _add_config_flags(s, None)
    sd = sub.add_parser("seed", help="create a merchant and members in PostgreSQL")
    sd.add_argument("--database-url", required=True, help="PostgreSQL of the deployment")
    sd.add_argument("--members", type=int, default=1000, help="members to create")
    sd.add_argument("--seed-points", type=int, default=1_000_000, help="each member's balance")
    sd.add_argument("--merchant", help="merchant id (default: lt<run id>, a new one)")
    sd.add_argument("--out", help="write {merchant, members} JSON here (for --members-file)")
    pf = sub.add_parser("preflight", help="check open-file and port limits for N connections")
    pf.add_argument("--connections", type=int, default=50_000, help="connections to plan for")
    pf.add_argument("--workers", type=int, default=4, help="load-generator processes")
    pf.add_argument("--url", default="http://127.0.0.1:8080", help="a gateway node's base URL")
    b = sub.add_parser(
        "bench", help="start local nodes, run the standard profile, write BENCHMARKS.md"
    )
    from loadtests.bench import add_flags

    add_flags(b)
    pg = sub.add_parser(
        "pages", help="time the wallet page in headless chromium (sale to DOM, first render)"
    )
    from loadtests.pages import add_flags as page_flags

    page_flags(pg)
    cg = sub.add_parser(
        "catalogue", help="time catalogue imports (rows/s) and the sale path's catalogue read"
    )
    from loadtests.catalogue import add_flags as catalogue_flags

    catalogue_flags(cg)
    wh = sub.add_parser(
        "webhooks",
        help="webhook deliveries/s to a local receiver; the ledger's latency with an endpoint "
        "that times out against none, same run",
    )
    from loadtests.webhooks import add_flags as webhook_flags

    webhook_flags(wh)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.cmd == "seed":
        from loadtests.seed import seed

        seeded = asyncio.run(seed(args.database_url, args.members, args.seed_points, args.merchant))
        if args.out:
            seeded.save(args.out)
        print(
            json.dumps(
                {"merchant": seeded.merchant, "members": len(seeded.members), "file": args.out}
            )
        )
        return 0
    if args.cmd == "preflight":
        from loadtests import preflight as pre

        ips = pre.auto_source_ips([args.url], args.connections)
        result = pre.check(args.connections, args.workers, ips)
        print("\n".join(result.lines()))
        return 0 if result.ok else 1
    if args.cmd == "bench":
        from loadtests.bench import main as bench_main

        return bench_main(args)
    if args.cmd == "pages":
        from loadtests.pages import main as pages_main

        return pages_main(args)
    if args.cmd == "catalogue":
        from loadtests.catalogue import main as catalogue_main

        return catalogue_main(args)
    if args.cmd == "webhooks":
        from loadtests.webhooks import main as webhooks_main

        return webhooks_main(args)
    try:
        file_values = load_file(args.file) if args.file else None
        cfg = build(args.cmd if args.cmd != "run" else "checkout", file_values, _flags(args))
    except (ValueError, OSError) as exc:
        print(f"python -m loadtests: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    return run_and_report(cfg)


def run_and_report(cfg: Config) -> int:
    from loadtests import report as rp
    from loadtests.runner import EXIT_SETUP, SetupError, execute

    try:
        _install_uvloop()
        result = asyncio.run(execute(cfg))
    except SetupError as exc:
        print(f"could not run: {exc}", file=sys.stderr)
        return EXIT_SETUP
    print(rp.text(result))
    for path in rp.write_files(result, cfg.json, cfg.csv, cfg.out):
        print(f"wrote {path}", file=sys.stderr)
    return int(result["exit_code"])


def _install_uvloop() -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover
        pass


if __name__ == "__main__":
    sys.exit(main())

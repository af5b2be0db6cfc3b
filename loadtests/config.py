"""Run configuration: defaults, per-scenario presets, a scenario file (TOML or JSON), flags.

Precedence, lowest first: built-in defaults, the scenario's preset, the scenario file, flags.
A scenario file uses the flags' long names with underscores as keys::

    scenario = "mixed"
    url = ["http://10.0.0.5:8080", "http://10.0.0.6:8080"]
    rate = 300
    duration = "2m"
    ramp = "30s"
    sessions = 9000
    members = 3000
    slo = ["reserve.p99<10ms", "push.p99<15ms", "errors.rate<0.1%"]
"""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loadtests.arrival import Stage, parse_duration, parse_stages, simple_stages

SCENARIOS = ("checkout", "sessions", "churn", "broadcast", "mixed", "wallet")
#: ``wallet`` goes through an app session of the member (the shopper opening its wallet);
#: the others through a POS terminal.
STEPS = ("lookup", "reserve", "commit", "sale", "wallet")


@dataclass
class Config:
    scenario: str = "checkout"
    #: Gateway node base URLs; sessions and terminals are spread over them round-robin.
    url: list[str] = field(default_factory=lambda: ["http://127.0.0.1:8080"])
    #: PostgreSQL of the deployment: seeding and the ledger verdict. Without it, give
    #: ``members_file`` and the verdict reads balances through the gateway.
    database_url: str | None = None
    members_file: str | None = None
    jwt_secret: str | None = None
    admin_token: str | None = None
    merchant: str | None = None
    members: int = 1000
    seed_points: int = 1_000_000
    #: App/web sessions held open (watchers), spread over the members round-robin.
    sessions: int = 0
    #: POS terminals (websockets); 0 = enough for the rate under the per-session rate limit.
    terminals: int = 0
    #: Open-loop arrival rate: sale flows per second (checkout, mixed) or changes per second.
    rate: float = 100.0
    duration: float = 30.0
    ramp: float = 0.0
    #: Overrides rate/duration/ramp: e.g. "10s:0->2000,60s:2000".
    stages: str | None = None
    #: Seconds from the start whose arrivals are sent but not recorded (e.g. the ramp).
    warmup: float = 0.0
    steps: list[str] = field(default_factory=lambda: ["lookup", "reserve", "commit", "sale"])
    release_fraction: float = 0.1
    points: int = 10
    sale_total: int = 1000
    churn_rate: float = 0.0
    churn_down: float = 0.2
    broadcast_count: int = 0
    broadcast_interval: float = 2.0
    workers: int = 0
    source_ips: list[str] | None = None
    timeout: float = 10.0
    max_inflight: int = 5000
    late_ms: float = 5.0
    quiesce: float = 10.0
    connect_concurrency: int = 200
    setup_timeout: float = 0.0
    slo: list[str] = field(default_factory=list)
    max_error_rate: float = 0.001
    out: str | None = "loadtest-results"
    json: str | None = None
    csv: str | None = None
    progress: bool = True

    def arrival_stages(self) -> list[Stage]:
        if self.stages:
            return parse_stages(self.stages)
        return simple_stages(self.rate, self.duration, self.ramp)

    @property
    def load_seconds(self) -> float:
        return sum(s.duration for s in self.arrival_stages())

    def resolved_secret(self) -> str:
        from loadtests.seed import secret

        return secret(self.jwt_secret)

    def resolved_admin_token(self) -> str:
        return self.admin_token or os.environ.get("GATEWAY_ADMIN_TOKEN") or "dev-admin-token"

    def auto_workers(self) -> int:
        if self.workers > 0:
            return self.workers
        by_fds = -(-(self.sessions + self.auto_terminals()) // 15_000)
        return max(1, min(os.cpu_count() or 1, 4), by_fds) if self.sessions or self.rate else 1

    def auto_terminals(self) -> int:
        if self.terminals > 0:
            return self.terminals
        if not self.steps or self.peak_rate() <= 0:
            return 1
        # keep each terminal under half the gateway's default 200 commands/s per session
        per_flow = len(self.steps)
        return max(4, int(self.peak_rate() * per_flow / 100) + 1)

    def peak_rate(self) -> float:
        return max((max(s.start, s.end) for s in self.arrival_stages()), default=0.0)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.pop("jwt_secret", None)
        d.pop("admin_token", None)
        return d


PRESETS: dict[str, dict[str, Any]] = {
    "checkout": {"rate": 200.0, "duration": 30.0, "ramp": 5.0, "members": 1000, "sessions": 0},
    "sessions": {
        "rate": 100.0,
        "duration": 30.0,
        "ramp": 2.0,
        "members": 1000,
        "sessions": 3000,
        "steps": ["sale"],
    },
    "churn": {
        "rate": 50.0,
        "duration": 30.0,
        "members": 500,
        "sessions": 1000,
        "steps": ["sale"],
        "churn_rate": 50.0,
    },
    "broadcast": {
        "rate": 0.0,
        "duration": 10.0,
        "members": 1000,
        "sessions": 2000,
        "steps": [],
        "broadcast_count": 3,
        "broadcast_interval": 2.0,
    },
    "wallet": {
        "rate": 200.0,
        "duration": 30.0,
        "ramp": 2.0,
        "members": 1000,
        "sessions": 1000,
        "steps": ["wallet"],
        "slo": ["wallet.p99<10ms"],
    },
    "mixed": {
        "rate": 100.0,
        "duration": 60.0,
        "ramp": 10.0,
        "members": 1000,
        "sessions": 3000,
        "churn_rate": 10.0,
        "broadcast_count": 1,
        "broadcast_interval": 20.0,
    },
}

DURATIONS = {
    "duration",
    "ramp",
    "warmup",
    "churn_down",
    "broadcast_interval",
    "timeout",
    "quiesce",
    "setup_timeout",
}
_LISTS = {"url", "steps", "slo", "source_ips"}


def load_file(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    raw = p.read_bytes()
    data: dict[str, Any] = json.loads(raw) if p.suffix == ".json" else tomllib.loads(raw.decode())
    if not isinstance(data, dict):
        raise ValueError(f"{path}: a scenario file holds a table/object")
    return data


def normalize(values: dict[str, Any]) -> dict[str, Any]:
    """Check keys and coerce values (durations, comma lists) to the field types."""
    names = {f.name for f in dataclasses.fields(Config)}
    out: dict[str, Any] = {}
    for key, value in values.items():
        key = key.replace("-", "_")
        if key not in names:
            raise ValueError(f"unknown setting {key!r} (known: {', '.join(sorted(names))})")
        if key in DURATIONS and value is not None:
            value = parse_duration(value)
        elif key in _LISTS and isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        out[key] = value
    if "steps" in out:
        bad = [s for s in out["steps"] if s not in STEPS]
        if bad:
            raise ValueError(f"unknown steps {bad}: choose from {', '.join(STEPS)}")
    if "scenario" in out and out["scenario"] not in SCENARIOS:
        raise ValueError(
            f"unknown scenario {out['scenario']!r}: choose from {', '.join(SCENARIOS)}"
        )
    return out


def build(scenario: str, file_values: dict[str, Any] | None, flag_values: dict[str, Any]) -> Config:
    file_values = normalize(file_values or {})
    flag_values = normalize(flag_values)
    name = flag_values.get("scenario") or file_values.get("scenario") or scenario
    if name not in SCENARIOS:
        raise ValueError(f"unknown scenario {name!r}")
    merged: dict[str, Any] = {**PRESETS[name], **file_values, **flag_values, "scenario": name}
    if "url" in flag_values and not flag_values["url"]:
        merged.pop("url")
    cfg = Config(**merged)
    validate(cfg)
    return cfg


def validate(cfg: Config) -> None:
    from loadtests.slo import parse_slo

    for s in cfg.slo:
        parse_slo(s)
    cfg.arrival_stages()
    if cfg.members < 1:
        raise ValueError("members must be >= 1")
    if cfg.sessions < 0 or cfg.rate < 0 or cfg.churn_rate < 0:
        raise ValueError("sessions and rates must be >= 0")
    if not 0 <= cfg.release_fraction <= 1:
        raise ValueError("release_fraction must be within [0, 1]")
    if cfg.churn_rate > 0 and cfg.sessions == 0:
        raise ValueError("churn needs sessions > 0")
    if cfg.broadcast_count > 0 and cfg.sessions == 0:
        raise ValueError("broadcast needs sessions > 0")
    if cfg.warmup < 0 or (cfg.warmup and cfg.warmup >= cfg.load_seconds):
        raise ValueError("warmup must be at least 0 and shorter than the load")
    for u in cfg.url:
        if not u.startswith(("http://", "https://")):
            raise ValueError(f"url {u!r} must start with http:// or https://")

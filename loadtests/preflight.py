"""Pre-flight: will this machine hold the connections asked for? Says what to change if not.

Every websocket costs the load generator one file descriptor (in the worker holding it) and one
local port on its source address; on one box the gateway side costs another descriptor.
"""

from __future__ import annotations

import ipaddress
import math
import resource
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

#: Descriptors a worker needs besides its sockets (interpreter, pipes, epoll, logs).
FD_OVERHEAD = 100


@dataclass
class Preflight:
    ok: bool = True
    facts: dict[str, object] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    advice: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {"ok": self.ok, **self.facts, "problems": self.problems, "advice": self.advice}

    def lines(self) -> list[str]:
        out = [f"pre-flight: {'ok' if self.ok else 'PROBLEMS'}"]
        out += [f"  {k}: {v}" for k, v in self.facts.items()]
        out += [f"  problem: {p}" for p in self.problems]
        out += [f"  fix: {a}" for a in self.advice]
        return out


def port_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> tuple[int, int] | None:
    try:
        lo, hi = Path(path).read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return None


def is_loopback(url: str) -> bool:
    host = urlparse(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def auto_source_ips(urls: list[str], connections: int, per_ip: int = 20_000) -> list[str] | None:
    """Loopback targets: spread sockets over 127.0.0.1..k so no source runs out of ports."""
    if not urls or not all(is_loopback(u) for u in urls):
        return None
    k = max(2, math.ceil(connections / per_ip))
    return [f"127.0.0.{i}" for i in range(1, min(k, 250) + 1)]


def check(
    connections: int,
    workers: int,
    source_ips: list[str] | None,
    nofile: tuple[int, int] | None = None,
) -> Preflight:
    pf = Preflight()
    soft, hard = nofile or resource.getrlimit(resource.RLIMIT_NOFILE)
    per_worker = math.ceil(connections / max(1, workers)) + FD_OVERHEAD
    pf.facts["connections"] = connections
    pf.facts["workers"] = workers
    pf.facts["open_files_limit"] = f"soft {soft}, hard {hard} (workers raise soft to hard)"
    pf.facts["descriptors_per_worker"] = per_worker
    if per_worker > hard:
        pf.ok = False
        need = math.ceil(connections / max(1, hard - FD_OVERHEAD))
        pf.problems.append(
            f"each of {workers} workers needs ~{per_worker} descriptors; the hard limit is {hard}"
        )
        pf.advice.append(
            f"use --workers {need} or more, or raise the limit: `ulimit -n {per_worker * 2}` "
            "(hard: /etc/security/limits.conf `nofile`, or LimitNOFILE= for a systemd unit)"
        )
    rng = port_range()
    ips = len(source_ips or []) or 1
    if rng is not None:
        ports = rng[1] - rng[0] + 1
        pf.facts["ip_local_port_range"] = f"{rng[0]}-{rng[1]} ({ports} ports)"
        pf.facts["source_addresses"] = ", ".join(source_ips) if source_ips else "default"
        if connections > ports * ips * 0.9:
            pf.ok = False
            pf.problems.append(
                f"{connections} sockets over {ips} source address(es) need more than the "
                f"{ports} local ports of each"
            )
            pf.advice.append(
                'widen the range: `sysctl -w net.ipv4.ip_local_port_range="1024 65000"`, or '
                "add source addresses: --source-ips 127.0.0.1,127.0.0.2,... (loopback) or "
                "several addresses of this host"
            )
    return pf

"""deploy/README.md's metrics contract names every metric a node registers and every alert the
Prometheus rules hold: a metric added to the code, or an alert to the rules, without its row
fails here."""

from __future__ import annotations

import re
from pathlib import Path

from gateway.metrics import Metrics

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "deploy" / "README.md").read_text()


def _registered() -> set[str]:
    """The metric families a node's registry exports (histograms and counters by their family
    name: ``gateway_command_seconds``, ``gateway_closes_total``)."""
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_every_metric_the_code_registers_is_in_the_metrics_contract() -> None:
    names = _registered()
    assert len(names) >= 14 and "gateway_ready" in names  # the walk found the registry
    missing = sorted(n for n in names if f"`{n}`" not in README)
    assert not missing, f"metrics missing from deploy/README.md's metrics contract: {missing}"


def test_the_metrics_contract_names_no_metric_the_code_does_not_export() -> None:
    listed = set(re.findall(r"^\| `((?:gateway|process|python)_\w+)` \|", README, re.M))
    assert listed == _registered()
    # the client library's collectors are there, by Prometheus' names
    assert {"process_open_fds", "process_max_fds", "process_cpu_seconds_total"} <= listed


def test_every_alert_rule_is_in_the_deploy_readme() -> None:
    rules = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    alerts = re.findall(r"^\s*- alert: (\w+)\s*$", rules, re.M)
    assert len(alerts) >= 6
    missing = [a for a in alerts if f"`{a}`" not in README]
    assert not missing, f"alerts missing from deploy/README.md: {missing}"
    documented = set(re.findall(r"^\| `(Gateway\w+)` \|", README, re.M))
    assert documented == set(alerts), "deploy/README.md's alert table and alerts.yml differ"

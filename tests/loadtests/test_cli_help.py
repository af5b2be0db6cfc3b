"""``--help`` shows the defaults loadtests/README.md says it shows: each scenario's own (its
preset), and the bench's sizes."""

from __future__ import annotations

import pytest

from loadtests.__main__ import parser
from loadtests.config import PRESETS


def _help(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    with pytest.raises(SystemExit):
        parser().parse_args([*argv, "--help"])
    return " ".join(capsys.readouterr().out.split())  # argparse wraps lines


@pytest.mark.parametrize("scenario", sorted(PRESETS))
def test_a_scenarios_help_shows_its_own_defaults(capsys, scenario: str) -> None:
    text = _help(capsys, scenario)
    preset = PRESETS[scenario]
    assert f"(default: {preset['rate']})" in text
    assert f"(default: {preset['members']})" in text
    assert "(default: 10.0)" in text  # --timeout, from Config


def test_the_scenario_defaults_do_not_override_a_scenario_file() -> None:
    # the help shows them, the parse leaves them unset: a file's value must win
    ns = parser().parse_args(["checkout"])
    assert not hasattr(ns, "rate") and not hasattr(ns, "members")


def test_bench_seed_and_preflight_help_show_defaults(capsys) -> None:
    bench = _help(capsys, "bench")
    assert "gateway nodes (cluster, push, idle, broadcast) (default: 3)" in bench
    assert "(default: BENCHMARKS.md)" in bench and "default 2000.0" in bench
    assert "(default: 1000000)" in _help(capsys, "seed", "--database-url", "x")
    assert "(default: 50000)" in _help(capsys, "preflight")

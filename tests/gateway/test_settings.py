"""Environment settings: defaults, and refusals of values that would break a guarantee."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gateway.settings import Settings


def test_defaults() -> None:
    s = Settings.from_env({})
    assert s.server.drain_seconds == 20.0 < 30  # below Kubernetes' grace period
    assert s.ledger.command_timeout == 10.0
    assert s.session.max_queue_bytes == 1_048_576


@pytest.mark.parametrize(
    ("name", "value"),
    [
        # 0 s: in-flight commands were cancelled mid-command, their replies lost (review)
        ("GATEWAY_DRAIN_SECONDS", "0"),
        # below the 64 KiB a session may buffer before it queues, the limit never applied
        ("GATEWAY_MAX_QUEUE_BYTES", "4096"),
        ("GATEWAY_LEDGER_COMMAND_TIMEOUT", "0"),
        ("GATEWAY_LEDGER_COMMAND_TIMEOUT", "soon"),
    ],
)
def test_values_that_break_a_guarantee_are_refused(name: str, value: str) -> None:
    with pytest.raises(ValueError, match=name):
        Settings.from_env({name: value})


def test_every_setting_read_from_the_environment_is_in_the_readme() -> None:
    root = Path(__file__).resolve().parents[2]
    code = (root / "gateway" / "settings.py").read_text()
    readme = (root / "README.md").read_text()
    names = set(re.findall(r'"(GATEWAY_[A-Z_]+)"', code))
    assert names, "no settings found"
    missing = sorted(n for n in names if f"`{n}`" not in readme and f"{n}`" not in readme)
    assert not missing, f"settings missing from README.md: {missing}"

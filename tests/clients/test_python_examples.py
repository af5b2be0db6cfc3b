"""clients/python/examples/pos.py runs against a real node: lookup or enrol, the cashier view,
a sale, reserve and commit, an op sent again after a timeout (applied once)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest
from loyalty_client import Client

from tests.loyalty_support import phone
from tests.support import RunningNode, pos_token

EXAMPLE = Path(__file__).resolve().parents[2] / "clients" / "python" / "examples" / "pos.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("example_pos", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_the_pos_example(
    rn: RunningNode, merchant: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pos = load()
    number = phone()
    argv = ["--url", rn.url, "--merchant", merchant, "--phone", number]
    argv += ["--journal", str(tmp_path / "till.db")]
    assert await pos.main(pos.parse(argv)) == 0
    out = capsys.readouterr().out
    assert "enrolled member" in out and "cashier view:" in out and "applied once" in out
    assert "journal empty" in out
    assert await pos.main(pos.parse(argv)) == 0  # again: the shopper is found this time
    assert "found member" in capsys.readouterr().out
    async with Client(rn.url, lambda: pos_token(merchant)) as till:
        member = (await till.lookup(phone=number)).member
        history = (await till.history(member)).purchases
        assert len(history) == 4  # two runs, two sales each: the retried one applied once
        # points: per run 12 (sale) - 10 (paid) + 3 (the retried sale)
        assert (await till.balance(member)).posted == 10

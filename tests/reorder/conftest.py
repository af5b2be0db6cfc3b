"""The reorder tests' node: its reorder worker does not run on its own (``reorder_seconds``
0), so each test says when a pass runs (``rn.node.predictor``) and can look in between."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from tests.conftest import REDIS_URL
from tests.support import RunningNode, running_node, settings_for


@pytest.fixture
async def rn(pg_dsn: str, redis_prefix: str) -> AsyncIterator[RunningNode]:
    s = settings_for(pg_dsn, REDIS_URL, "ro")
    s = replace(s, server=replace(s.server, reorder_seconds=0.0))
    async with running_node(s, redis_prefix) as node:
        yield node

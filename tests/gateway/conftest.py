"""Fixtures shared by the live-session tests: a world of two merchants and their members, and an
HTTP client session. A file that needs another world (e.g. one member) defines its own."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from tests.gateway.live_support import make_world


@pytest.fixture
async def world(pg_dsn: str) -> dict[str, Any]:
    return await make_world(pg_dsn)


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s

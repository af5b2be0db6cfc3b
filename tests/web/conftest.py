"""Fixtures of the page tests: a shop on its own origin, a headless chromium, and two nodes
that allow each other's pages and the shop's."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from playwright.async_api import Browser

from tests.conftest import REDIS_URL
from tests.support import RunningNode
from tests.web.page_support import Shop, chromium, node_pair, shop_server


@pytest.fixture
async def shop() -> AsyncIterator[Shop]:
    async with shop_server() as s:
        yield s


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with chromium() as b:
        yield b


@pytest.fixture
async def nodes(pg_dsn, redis_prefix, shop) -> AsyncIterator[tuple[RunningNode, RunningNode]]:
    async with node_pair(pg_dsn, REDIS_URL, redis_prefix, shop.origin) as pair:
        yield pair

"""The reorder tests' node: its reorder job does not run on its own (``reorder_seconds`` 0),
so each test says when a pass runs (``rn.node.reorder``, or one of its parts) and can look in
between; its mail goes to a real SMTP server (aiosmtpd) that answers what the test tells it,
its SMS to a real local HTTP server that records what it receives."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import replace

import pytest

from gateway.settings import NotifySettings
from tests.conftest import REDIS_URL
from tests.reorder.support import Smtp
from tests.servers import HttpReceiver
from tests.support import RunningNode, running_node, settings_for


@pytest.fixture
def smtp() -> Iterator[Smtp]:
    with Smtp() as server:
        yield server


@pytest.fixture
async def sms() -> AsyncIterator[HttpReceiver]:
    async with HttpReceiver() as receiver:
        yield receiver


@pytest.fixture
async def rn(
    pg_dsn: str, redis_prefix: str, smtp: Smtp, sms: HttpReceiver
) -> AsyncIterator[RunningNode]:
    s = settings_for(pg_dsn, REDIS_URL, "ro")
    s = replace(
        s,
        server=replace(s.server, reorder_seconds=0.0),
        notify=NotifySettings(
            smtp_url=smtp.url, mail_from="shop@example.com", sms_url=sms.url, sms_token="k"
        ),
    )
    async with running_node(s, redis_prefix) as node:
        yield node

"""The node's JSON logs (GATEWAY_LOG_FORMAT=json), read from a real node process's stderr: every
line one JSON object with the node's name; an access line per HTTP request by the route's
template (no member id in it) with the request id the caller gave or a new one, echoed back;
an audit line per admin write naming who, what, which merchant and member, and the status; a
websocket's access line naming its session and merchant."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from tests.conftest import REDIS_URL
from tests.live_support import pos
from tests.loyalty_support import ADMIN
from tests.support import NodeProcess


def _lines(node: NodeProcess) -> list[dict[str, Any]]:
    with open(node.log.name) as f:
        text = f.read()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


async def test_json_logs_carry_the_request_the_session_and_who_wrote(
    pg_dsn: str, redis_prefix: str, http: aiohttp.ClientSession, merchant: str
) -> None:
    node = NodeProcess(
        pg_dsn,
        REDIS_URL,
        redis_prefix,
        "logs-a",
        {"GATEWAY_LOG_FORMAT": "json", "GATEWAY_LOG_LEVEL": "INFO"},
    )
    try:
        await node.wait_ready()
        member_url = f"{node.url}/admin/v1/merchants/{merchant}/members/m-nobody-here"
        async with http.delete(member_url, headers={**ADMIN, "X-Request-Id": "erase-7f3a"}) as resp:
            assert resp.status == 404 and resp.headers["X-Request-Id"] == "erase-7f3a"
        # a caller's id that is not a plain token is replaced, not written into the log
        async with http.get(
            f"{node.url}/admin/v1/merchants/{merchant}/rules",
            headers={**ADMIN, "X-Request-Id": 'x" injected {"level":"fake"}'},
        ) as resp:
            assert resp.status == 200
            made = resp.headers["X-Request-Id"]
            assert made != "x" and len(made) == 32
        till = await pos(http, node.url, merchant)
        await till.close()
        await till.wait_closed()
        node.terminate()
        assert node.proc.wait(30) == 0
        lines = _lines(node)  # every line parses: nothing but JSON on stderr
    finally:
        node.kill()
    assert lines and all(line["node"] == "logs-a" for line in lines)
    access = [line for line in lines if line["logger"] == "gateway.access"]
    audit = [line for line in lines if line["logger"] == "gateway.audit"]
    erase = next(a for a in access if a.get("request_id") == "erase-7f3a")
    assert erase["method"] == "DELETE" and erase["status"] == 404
    assert erase["path"] == "/admin/v1/merchants/{merchant}/members/{member}"
    assert "m-nobody-here" not in json.dumps(access)  # templates, never raw paths
    assert next(a for a in access if a.get("request_id") == made)["status"] == 200
    assert [
        (a["actor"], a["action"], a["merchant"], a["member"], a["status"], a["request_id"])
        for a in audit
    ] == [
        (
            "operator",
            "DELETE /admin/v1/merchants/{merchant}/members/{member}",
            merchant,
            "m-nobody-here",
            404,
            "erase-7f3a",
        )
    ]  # the GET wrote nothing, so it is not audited
    ws = next(a for a in access if a["path"] == "/ws")
    assert ws["status"] == 101 and ws["merchant"] == merchant and ws["session"].startswith("logs-a")
    assert all(line["level"] in ("debug", "info", "warning", "error") for line in lines)

"""One register's requests timed one at a time over a raw websocket (the benches that time a
single command's reply, not a load): each frame gets the next id, and the time is from sending
it to its reply, in milliseconds. Pushes and other frames in between are skipped."""

from __future__ import annotations

import json
import time
from typing import Any

import aiohttp


class TimedRequests:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self._ws = ws
        self._id = 0

    async def __call__(self, frame: dict[str, Any]) -> tuple[float, dict[str, Any]]:
        self._id += 1
        rid = str(self._id)
        t = time.perf_counter()
        await self._ws.send_str(json.dumps({**frame, "id": rid}))
        while True:
            msg = json.loads((await self._ws.receive()).data)
            if msg.get("id") == rid:
                return (time.perf_counter() - t) * 1000, msg


__all__ = ["TimedRequests"]

"""The node's logs: one JSON object per line (``GATEWAY_LOG_FORMAT=json``, the default of the
container image) or plain text (``text``, for a terminal), through the standard library's
``logging`` (every module logs with ``logging.getLogger(__name__)``), formatted by structlog.

Each line carries what is known where it was written, from context variables bound by the code
that knows it, and copied into every task it starts: the ``node``; for an HTTP request its
``request_id`` (the caller's ``X-Request-Id`` when it is a plain token, else a new one, and
echoed in the answer); for a websocket session its ``session`` and, after ``hello``,
``merchant``. Three loggers have fixed shapes:

- ``gateway.access``: one line per HTTP request: ``method``, ``path`` (the route's template, so no
  member id or code leaks into the log), ``status``, ``ms``, ``remote``;
- ``gateway.audit``: one line per admin write (every method but GET): ``actor`` (``operator`` or
  ``merchant:<id>``, the token that reached it), ``action`` (method and route), ``merchant``,
  ``member`` when the path names one, ``status``, and ``request_id``: erasures, merges, manual
  adjustments, rule and key changes all pass through it;
- the rest: ``event`` (the message), ``level``, ``logger``, ``timestamp`` (UTC, ISO 8601), and
  the ``extra`` fields of the call.
"""

from __future__ import annotations

import logging
import re
import sys
import uuid
from collections.abc import Mapping
from contextvars import Token
from typing import Any

import orjson
import structlog
from structlog.contextvars import bind_contextvars, merge_contextvars, reset_contextvars

ACCESS = logging.getLogger("gateway.access")
AUDIT = logging.getLogger("gateway.audit")

#: A request id the node takes from its caller: a plain token, bounded (anything else is
#: replaced, so a client cannot write arbitrary text into the logs).
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def _json(obj: Any, **_: Any) -> str:
    return orjson.dumps(obj, default=str).decode()


def configure(level: str, fmt: str, node: str) -> None:
    """Route every ``logging`` record of the process to stderr, as JSON lines or text."""
    shared: list[Any] = [
        merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Any = (
        structlog.processors.JSONRenderer(serializer=_json)
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(
            colors=False, exception_formatter=structlog.dev.plain_traceback
        )
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            # a traceback as one string field in JSON; the console renderer draws its own
            *([structlog.processors.format_exc_info] if fmt == "json" else []),
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    bind_contextvars(node=node)


def request_id(given: str | None) -> str:
    """The caller's ``X-Request-Id`` if it is a plain token, else a new one."""
    if given and _REQUEST_ID.match(given):
        return given
    return uuid.uuid4().hex


def bind(**values: Any) -> Mapping[str, Token[Any]]:
    """Bind ``values`` for this task (and the tasks it starts); ``unbind`` undoes it."""
    return bind_contextvars(**values)


def unbind(tokens: Mapping[str, Token[Any]]) -> None:
    reset_contextvars(**tokens)


def access(
    method: str, path: str, status: int, ms: float, remote: str | None, level: int = logging.INFO
) -> None:
    ACCESS.log(
        level,
        "request",
        extra={
            "method": method,
            "path": path,
            "status": status,
            "ms": round(ms, 3),
            "remote": remote,
        },
    )


def audit(actor: str, action: str, merchant: str | None, member: str | None, status: int) -> None:
    AUDIT.info(
        "admin",
        extra={
            "actor": actor,
            "action": action,
            "merchant": merchant,
            "member": member,
            "status": status,
        },
    )


__all__ = ["ACCESS", "AUDIT", "access", "audit", "bind", "configure", "request_id", "unbind"]

"""Which handler answers each client frame, and in what order it runs among the session's
commands (declared here, where it is registered: see ``ordering.py``).

A handler takes the ``Call`` (the session, its principal, the command's place in the order)
and the frame, and returns the reply frame; domain refusals are raised as ``GatewayError``
and answered as ``error`` frames with their stable code, and the session carries on. The
session-level commands are registered by ``core.py``; the points and loyalty commands by
``gateway.commands``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gateway.errors import GatewayError, Refused
from gateway.sessions.ordering import Order, Place
from protocol.codes import ErrorCode
from protocol.messages import Error

if TYPE_CHECKING:
    from gateway.auth import Principal
    from gateway.sessions.session import Session


@dataclass(frozen=True, slots=True)
class Call:
    """One command being served."""

    session: Session
    principal: Principal
    #: Its place in the session's order (the ledger's ``Ticket`` for the operation it
    #: submits), or None for a command that keeps no order.
    place: Place | None = None


Handler = Callable[[Call, Any], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Route:
    handler: Handler
    order: Order


def error_frame(request_id: str | None, exc: GatewayError) -> Error:
    return Error(id=request_id, code=exc.code.value, message=exc.message, retryable=exc.retryable)


class Router:
    def __init__(self) -> None:
        self._routes: dict[type, Route] = {}

    def add(self, frame_type: type, handler: Handler, order: Order = Order.FREE) -> None:
        if frame_type in self._routes:
            raise ValueError(f"{frame_type.__name__} has a handler already")
        self._routes[frame_type] = Route(handler, order)

    def order_of(self, frame: object) -> Order:
        route = self._routes.get(type(frame))
        return Order.FREE if route is None else route.order

    async def handle(self, call: Call, frame: object) -> object:
        """The reply frame for ``frame``; raises ``GatewayError`` for refusals."""
        route = self._routes.get(type(frame))
        if route is None:
            raise Refused("unsupported command", ErrorCode.UNKNOWN_TYPE)
        return await route.handler(call, frame)

    def routes(self) -> dict[type, Route]:
        """Every frame type with a handler, and its route."""
        return dict(self._routes)

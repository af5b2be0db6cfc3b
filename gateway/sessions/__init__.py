"""Live websocket sessions: the ``/ws`` endpoint, one session's bounded outbound path, the
node's heartbeat, the session registry and drain, the command router and the one owner of
per-session command order. It knows no domain command: those are registered on its router
(``gateway.commands``). This is its public face."""

from gateway.sessions.core import Subscriptions, register
from gateway.sessions.endpoint import MAX_INFLIGHT, Endpoint
from gateway.sessions.heartbeat import Heartbeat
from gateway.sessions.ordering import Order, Ordering, Place
from gateway.sessions.registry import Registry
from gateway.sessions.router import Call, Router, error_frame
from gateway.sessions.scope import Scope
from gateway.sessions.session import CLOSE_TIMEOUT, FLUSH_TIMEOUT, REPLY_GRACE, Session

__all__ = [
    "CLOSE_TIMEOUT",
    "FLUSH_TIMEOUT",
    "MAX_INFLIGHT",
    "REPLY_GRACE",
    "Call",
    "Endpoint",
    "Heartbeat",
    "Order",
    "Ordering",
    "Place",
    "Registry",
    "Router",
    "Scope",
    "Session",
    "Subscriptions",
    "error_frame",
    "register",
]

"""Fault injection for the fault tests; inert unless its environment variable is set.

``GATEWAY_FAULT_CRASH_AFTER_COMMIT=<prefix>`` makes the process exit abruptly (like
``kill -9``) right after a COMMIT that contained an operation whose id starts with ``prefix``,
before anything is published or replied: the window in which an acknowledged-to-PostgreSQL but
unanswered operation exists.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

_CRASH_PREFIX = os.environ.get("GATEWAY_FAULT_CRASH_AFTER_COMMIT") or None


def after_commit(op_ids: Iterable[str]) -> None:
    if _CRASH_PREFIX is not None and any(o.startswith(_CRASH_PREFIX) for o in op_ids):
        os._exit(137)

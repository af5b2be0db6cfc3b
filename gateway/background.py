"""Stopping a node's background tasks (outbox relay, sweeper, heartbeat, presence upkeep, ...)
for sure.

One ``cancel()`` is not always enough: a library call that swallows the ``CancelledError``
lets a periodic loop carry on to its next pass, and whoever awaits the task waits forever.
That happened to the outbox relay in a fresh-clone CI run: a node's close waited on a relay
task shown as "cancelling" but asleep before its next pass, until pytest-timeout stopped the
test at 120 s. ``stop`` cancels again every ``patience`` seconds until the task is done and
logs where a cancellation was lost, so the culprit can be found.
"""

from __future__ import annotations

import asyncio
import io
import logging

log = logging.getLogger(__name__)


async def stop(task: asyncio.Task[object] | None, patience: float = 1.0) -> None:
    """Cancel ``task`` and wait until it is done, cancelling again if it is still running
    after ``patience`` seconds. Its result or error is consumed (a closing node logs no
    "exception never retrieved")."""
    if task is None:
        return
    rounds = 0
    while not task.done():
        task.cancel()
        await asyncio.wait({task}, timeout=patience)
        rounds += 1
        if not task.done():
            stack = io.StringIO()
            task.print_stack(file=stack)
            log.warning(
                "task %s survived cancellation %d time(s); cancelling again\n%s",
                task.get_name(),
                rounds,
                stack.getvalue(),
            )
    if not task.cancelled() and task.exception() is not None:
        log.debug(
            "task %s ended with an error while stopping", task.get_name(), exc_info=task.exception()
        )

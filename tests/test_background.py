"""``gateway.background.stop`` stops a task even when a cancellation is swallowed."""

from __future__ import annotations

import asyncio

from gateway.background import stop


async def test_stop_cancels_again_when_a_cancellation_was_swallowed(caplog):
    swallowed = 0

    async def periodic_pass_with_a_library_that_eats_one_cancel() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(0.05)  # inside the library call
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1
            await asyncio.sleep(0.05)  # the loop's own sleep

    task = asyncio.create_task(periodic_pass_with_a_library_that_eats_one_cancel())
    await asyncio.sleep(0.01)
    try:
        await asyncio.wait_for(stop(task, patience=0.2), 5)
    finally:
        task.cancel()  # never leave it running past the test
    assert task.cancelled() and swallowed == 1
    assert "survived cancellation 1 time(s)" in caplog.text


async def test_stop_consumes_the_error_of_a_task_that_failed():
    async def fails() -> None:
        raise RuntimeError("boom")

    task = asyncio.create_task(fails())
    await asyncio.sleep(0)
    await stop(task)
    await stop(None)
    assert task.done()

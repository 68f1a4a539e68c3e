"""Running blocking work in a worker thread from the event loop, to its end."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


async def run_to_end(fn: Callable[[], T]) -> T:
    """``fn()`` in a worker thread. If the caller is cancelled, it still waits for the
    thread to end before the cancellation goes on: the thread may read the model under a
    lock the caller holds, or talk on a connection the next caller will use."""
    future = asyncio.get_running_loop().run_in_executor(None, fn)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        while not future.done():
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait([future])
        raise

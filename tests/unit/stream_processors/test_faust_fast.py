"""The hand-stepped message hand-off keeps asyncio semantics: results, blocking, cancellation."""

from __future__ import annotations

import asyncio

import pytest

from stream_processors.faust_fast import finish


async def doubled(queue: asyncio.Queue[int]) -> int:
    await asyncio.sleep(0)
    value = await queue.get()
    await asyncio.sleep(0.001)
    return value * 2


def test_a_coroutine_that_blocks_is_finished_by_a_task() -> None:
    async def main() -> int:
        queue: asyncio.Queue[int] = asyncio.Queue()
        coro = doubled(queue)
        pending = coro.send(None)  # what FastConsumer does: one step by hand
        task = asyncio.ensure_future(finish(coro, pending))
        await asyncio.sleep(0.005)
        queue.put_nowait(21)
        return await task

    assert asyncio.run(main()) == 42


def test_cancelling_the_task_cancels_the_coroutine() -> None:
    async def main() -> None:
        queue: asyncio.Queue[int] = asyncio.Queue()
        coro = doubled(queue)
        task = asyncio.ensure_future(finish(coro, coro.send(None)))
        await asyncio.sleep(0.005)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert coro.cr_frame is None  # closed, not left suspended

    asyncio.run(main())


def test_errors_propagate() -> None:
    async def boom() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad")

    async def main() -> None:
        coro = boom()
        with pytest.raises(ValueError, match="bad"):
            await asyncio.ensure_future(finish(coro, coro.send(None)))

    asyncio.run(main())

import asyncio
import gc

from tollway.server.asgi import DisconnectWatch


async def test_finished_watch_leaves_no_reference_cycles() -> None:
    """A cycle per request is freed only by the cyclic GC, which then dominates CPU."""
    never: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, str]:
        return await asyncio.shield(never)

    gc.collect()
    gc.disable()
    try:
        for _ in range(200):
            watch = DisconnectWatch(receive)
            await asyncio.sleep(0)  # the watcher starts waiting
            watch.finish()
            await asyncio.sleep(0)  # its cancellation lands
            del watch
        # With the cyclic GC off, anything left in a cycle is still alive here.
        alive = sum(isinstance(o, DisconnectWatch) for o in gc.get_objects())
        assert alive == 0  # was 200: each kept ~28 objects alive until a GC pass
    finally:
        gc.enable()
        never.cancel()


async def test_disconnect_cancels_the_handling_task() -> None:
    gone: asyncio.Future[dict[str, str]] = asyncio.get_running_loop().create_future()

    async def receive() -> dict[str, str]:
        return await gone

    async def handler() -> str:
        watch = DisconnectWatch(receive)
        try:
            await asyncio.sleep(30)
            return "finished"
        except asyncio.CancelledError:
            return "cancelled" if watch.gone else "other"
        finally:
            watch.finish()

    task = asyncio.create_task(handler())
    await asyncio.sleep(0)
    gone.set_result({"type": "http.disconnect"})
    assert await asyncio.wait_for(task, 5) == "cancelled"

"""Attribution in the library: a context variable turned into the edge's headers when a
request is sent; nested blocks refine, a request's own header wins, threads and tasks
each see their own."""

from __future__ import annotations

import asyncio
import threading

from tollway.library.attribution import attribute, current, headers_for


def test_nested_blocks_refine_the_outer_one() -> None:
    assert headers_for(set()) == []
    with attribute(user="u1", feature="search"):
        with attribute(feature="export", conversation="c9"):
            assert headers_for(set()) == [(b"x-tollway-user", b"u1"),
                                          (b"x-tollway-feature", b"export"),
                                          (b"x-tollway-conversation-id", b"c9")]
        assert headers_for(set()) == [(b"x-tollway-user", b"u1"),
                                      (b"x-tollway-feature", b"search")]
    assert current() is None


def test_a_header_the_request_sets_wins() -> None:
    with attribute(user="u1", tier="cheap"):
        assert headers_for({b"x-tollway-user"}) == [(b"x-tollway-tier", b"cheap")]


def test_threads_and_tasks_each_see_their_own() -> None:
    seen: dict[str, str | None] = {}

    def in_thread() -> None:
        a = current()
        seen["thread"] = a.user if a else None

    async def tasks() -> list[str | None]:
        async def one(n: int) -> str | None:
            with attribute(user=f"task-{n}"):
                await asyncio.sleep(0)  # the others run in between
                a = current()
                return a.user if a else None
        return list(await asyncio.gather(*(one(n) for n in range(3))))

    with attribute(user="main"):
        t = threading.Thread(target=in_thread)  # a new thread starts with an empty context
        t.start()
        t.join()
        assert asyncio.run(tasks()) == ["task-0", "task-1", "task-2"]
        assert current() is not None and current().user == "main"  # type: ignore[union-attr]
    assert seen == {"thread": None}

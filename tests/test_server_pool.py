"""The chat server's worker pool: requests spread over two CPU workers, a full queue answers
503, killing one worker's process leaves the other serving, SIGTERM finishes running answers.

The shared server of conftest (`--workers 2 --max-batch 4 --queue-size 24`); the tests run in
file order, after test_server.py, and the last one stops the server."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time

import aiohttp
import pytest
from conftest import SERVER_KEY
from server_helpers import answer, chat_body, events, request, stats

pytestmark = pytest.mark.slow
KEY = SERVER_KEY
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def pool(chat_server):
    return chat_server


async def _post(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, dict, bytes]:
    async with session.post(url, json=body, headers=AUTH) as resp:
        return resp.status, dict(resp.headers), await resp.read()


def _long(i: int, tokens: int = 400) -> dict:
    return chat_body(f"Story {i}, please, a long one", max_tokens=tokens, seed=i, temperature=1.0)


def test_requests_spread_over_both_workers(pool) -> None:
    before = stats(pool.port, KEY)

    async def eight() -> list[tuple[int, dict, bytes]]:
        async with aiohttp.ClientSession() as session:
            url = f"{pool.url}/chat/completions"
            return await asyncio.gather(*(_post(session, url, _long(i, 60)) for i in range(8)))

    results = asyncio.run(eight())
    assert all(status == 200 for status, _, _ in results)
    workers = [answer(raw)[2] for _, _, raw in results]
    assert all(len(w) == 1 for w in workers)
    used = [next(iter(w)) for w in workers]
    assert sorted(used) == [0, 0, 0, 0, 1, 1, 1, 1]  # least-loaded: four slots each
    after = stats(pool.port, KEY)
    for index in (0, 1):
        served = (
            after["workers"][index]["requests_served"] - before["workers"][index]["requests_served"]
        )
        assert served == 4, after


def test_a_full_queue_answers_503(pool) -> None:
    """8 slots and 24 places in the queue: of 40 long requests at once, the last get 503."""

    async def flood() -> tuple[list[tuple[int, dict, bytes]], dict]:
        async with aiohttp.ClientSession() as session:
            url = f"{pool.url}/chat/completions"

            async def post(i: int) -> tuple[int, dict, bytes]:
                async with session.post(url, json=_long(i), headers=AUTH) as resp:
                    return resp.status, dict(resp.headers), await resp.read()

            tasks = [asyncio.ensure_future(post(i)) for i in range(40)]
            deadline = time.monotonic() + 60
            while not any(t.done() for t in tasks) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.5)
            full = stats(pool.port, KEY)
            refused = [t.result() for t in tasks if t.done() and t.result()[0] == 503]
            for task in tasks:  # the others hang up: their slots and places are freed
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            return refused, full

    refused, full = asyncio.run(flood())
    assert 1 <= len(refused) <= 40 - 32, full
    assert full["queue_length"] > 0 and full["busy_slots"] > 0, full
    for _, headers, raw in refused:
        assert headers["Retry-After"] == "1"
        assert json.loads(raw)["error"]["code"] == "queue_full"
    deadline = time.monotonic() + 5
    while stats(pool.port, KEY)["busy_slots"] and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stats(pool.port, KEY)["queue_length"] == 0


def test_killing_one_worker_leaves_the_other_serving(pool) -> None:
    victim = stats(pool.port, KEY)["workers"][1]["pid"]

    async def kill_mid_stream() -> list[list]:
        async with aiohttp.ClientSession() as session:
            started = [asyncio.Event() for _ in range(8)]

            async def stream(i: int) -> list:
                url = f"{pool.url}/chat/completions"
                items = []
                async with session.post(url, json=_long(i), headers=AUTH) as resp:
                    assert resp.status == 200
                    async for line in resp.content:
                        if line.startswith(b"data: "):
                            items.append(json.loads(line[6:]))
                            started[i].set()
                return items

            tasks = [asyncio.ensure_future(stream(i)) for i in range(8)]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), timeout=60)
            os.kill(victim, signal.SIGKILL)
            return await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)

    streams = asyncio.run(kill_mid_stream())  # none hangs: each ends within the timeout
    workers = [{e["gpu"] for e in s if "gpu" in e} for s in streams]
    assert sorted(len(w) for w in workers) == [1] * 8 and {0, 1} == set().union(*workers)
    for used, items in zip(workers, streams, strict=True):
        if used == {0}:
            assert items[-1].get("done"), items[-1]
        elif "error" in items[-1]:  # cut by the kill, told so
            assert "worker 1 died" in items[-1]["error"]["message"]
        else:  # finished just before the kill
            assert items[-1].get("done"), items[-1]
    assert any("error" in items[-1] for items in streams)
    now = stats(pool.port, KEY)
    assert now["workers"][1]["alive"] is False and now["workers_alive"] == 1
    assert "exited" in now["workers"][1]["error"]
    status, _, raw = request(pool.port, "GET", "/health")
    assert status == 200 and json.loads(raw)["workers_alive"] == 1
    for i in range(3):  # the other worker serves everything now
        status, _, raw = request(pool.port, "POST", "/chat/completions", _long(i, 8), KEY)
        assert status == 200 and answer(raw)[2] == {0}


def test_sigterm_finishes_running_answers_then_exits(pool) -> None:
    workers = [w["pid"] for w in stats(pool.port, KEY)["workers"]]

    async def stream_through_shutdown() -> tuple[list, int]:
        async with aiohttp.ClientSession() as session:
            url = f"{pool.url}/v1/chat/completions"
            body = {**_long(7, 200), "stream": True}
            async with session.post(url, json=body, headers=AUTH) as resp:
                first = await resp.content.readline()
                pool.proc.send_signal(signal.SIGTERM)
                await asyncio.sleep(0.2)
                try:  # no new requests while draining
                    async with session.post(url, json=body, headers=AUTH) as late:
                        late_status = late.status
                except aiohttp.ClientConnectionError:
                    late_status = 0
                rest = [line async for line in resp.content]
        return [first, *rest], late_status

    lines, late_status = asyncio.run(stream_through_shutdown())
    items = events(b"".join(lines))
    assert items[-1] == "[DONE]" and items[-2]["choices"][0]["finish_reason"], items[-3:]
    assert late_status in (0, 503)
    assert pool.proc.wait(30) == 0
    deadline = time.time() + 10
    while any(_exists(pid) for pid in workers) and time.time() < deadline:
        time.sleep(0.05)
    assert not any(_exists(pid) for pid in workers)
    assert "shutting down" in pool.log and "Traceback" not in pool.log


def _exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

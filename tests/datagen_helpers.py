"""A stub teacher for the datagen tests: a small aiohttp app that answers like an OpenAI endpoint.

It runs on 127.0.0.1 (a free port) in a thread with its own event loop, so the datagen command
can run in this process or in a subprocess. Each request carries the job's key
(``X-Datagen-Job``); ``fault(key, attempt)`` decides whether that attempt of that job is answered
well (``None``) or badly (one of :data:`FAULTS`), and ``reply(key, body)`` gives a good answer's
text. Every request is recorded with its arrival time.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

FAULTS = (
    "non-json",  # 200 with an HTML body / a stream event that is not JSON
    "truncated",  # a stream that ends without [DONE]
    "cut",  # the connection closes in the middle of the body
    "http-500",
    "http-503",  # with Retry-After: 1
    "http-429",  # with Retry-After: 1
    "http-400",
    "http-401",
    "timeout",  # answers after 3 s
    "empty-choices",
    "stream-error",  # an error event in the stream
)


@dataclass
class Seen:
    """One request as the stub saw it."""

    key: str
    attempt: int
    at: float
    body: dict[str, Any]
    fault: str | None


def _completion(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": 0,
        "model": "stub",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }


def _chunk(delta: dict[str, Any], finish: str | None) -> bytes:
    event = {
        "id": "chatcmpl-stub",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return f"data: {json.dumps(event)}\n\n".encode()


class StubTeacher:
    """The stub endpoint (a context manager).

    Args:
        reply: the good answer's text for a job key and request body.
        fault: what goes wrong with attempt ``attempt`` (1-based) of job ``key``, if anything.
        delay: seconds every answer waits first (to keep requests in flight).
    """

    def __init__(
        self,
        reply: Callable[[str, dict[str, Any]], str],
        fault: Callable[[str, int], str | None] = lambda key, attempt: None,
        delay: float = 0.0,
    ) -> None:
        self.reply = reply
        self.fault = fault
        self.delay = delay
        self.seen: list[Seen] = []
        self.attempts: Counter[str] = Counter()
        self.in_flight = 0
        self.max_in_flight = 0
        self.port = 0
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        """The API base to give ``--endpoint``."""
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> StubTeacher:
        self._thread.start()
        assert self._ready.wait(30), "the stub teacher did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._stop(), self._loop).result(30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(30)

    def _serve(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._start())
        self._ready.set()
        self._loop.run_forever()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def _stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    def keys_seen(self) -> Counter[str]:
        """Requests per job key."""
        with self._lock:
            return Counter(s.key for s in self.seen)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        key = request.headers.get("X-Datagen-Job", "")
        with self._lock:
            self.attempts[key] += 1
            attempt = self.attempts[key]
            fault = self.fault(key, attempt)
            self.seen.append(Seen(key, attempt, time.monotonic(), body, fault))
            self.in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return await self._answer(request, body, key, fault)
        finally:
            with self._lock:
                self.in_flight -= 1

    async def _answer(
        self, request: web.Request, body: dict[str, Any], key: str, fault: str | None
    ) -> web.StreamResponse:
        stream = bool(body.get("stream"))
        if fault and fault.startswith("http-"):
            status = int(fault[5:])
            headers = {"Retry-After": "1"} if status in (429, 503) else {}
            error = {"error": {"message": f"stub says {status}", "type": "stub"}}
            return web.json_response(error, status=status, headers=headers)
        if fault == "timeout":
            await asyncio.sleep(3)
        text = self.reply(key, body)
        if not stream:
            if fault == "non-json":
                return web.Response(
                    text="<html>502 Bad Gateway</html>", content_type="application/json"
                )
            if fault == "empty-choices":
                return web.json_response({"id": "x", "choices": []})
            if fault == "cut":
                return await self._cut(request, json.dumps(_completion(text)).encode())
            if fault in ("truncated", "stream-error"):
                return await self._cut(request, json.dumps(_completion(text)).encode())
            return web.json_response(_completion(text))
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        if fault == "empty-choices":
            await response.write(b'data: {"id": "x", "choices": []}\n\n')
            await response.write(b"data: [DONE]\n\n")
            await response.write_eof()
            return response
        await response.write(_chunk({"role": "assistant", "content": ""}, None))
        half = len(text) // 2
        await response.write(_chunk({"content": text[:half]}, None))
        if fault == "non-json":
            await response.write(b"data: {this is not json\n\n")
        elif fault == "stream-error":
            await response.write(b'data: {"error": {"message": "the worker died"}}\n\n')
        elif fault == "cut":
            assert request.transport is not None
            request.transport.abort()
            return response
        elif fault == "truncated":
            await response.write_eof()
            return response
        await response.write(_chunk({"content": text[half:]}, None) + _chunk({}, "stop"))
        usage = {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18}
        await response.write(f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n".encode())
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _cut(self, request: web.Request, payload: bytes) -> web.StreamResponse:
        """Promise the whole body, send half of it, close the connection."""
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "Content-Length": str(len(payload))}
        )
        await response.prepare(request)
        await response.write(payload[: len(payload) // 2])
        assert request.transport is not None
        request.transport.abort()
        return response


def identity_reply(key: str, body: dict[str, Any]) -> str:
    """A good ``identity`` answer, different for every job."""
    return f"I'm nanochat, a small language model built by the nanochat project (note {key})."


def example_replies(template: Any, seed: int = 0) -> Callable[[str, dict[str, Any]], str]:
    """Good answers from the template's own ``example_reply`` (job keys end in the index)."""

    def reply(key: str, body: dict[str, Any]) -> str:
        index = int(key.rsplit("-", 1)[1])
        return str(template.example_reply(template.make_job(seed, index)))

    return reply


def read_records(out: Any) -> list[dict[str, Any]]:
    """Every record of every shard of a datagen folder."""
    records = []
    for path in sorted(out.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records

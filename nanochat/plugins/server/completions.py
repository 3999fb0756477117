"""The generation routes: nanochat's streaming protocol and OpenAI's chat completions.

``POST /chat/completions`` answers ``text/event-stream``: one ``data: {"token": TEXT, "gpu":
WORKER}`` per piece of text the engine releases, then ``data: {"done": true, "finish_reason":
"stop" | "length" | "context"}``. ``POST /v1/chat/completions`` is OpenAI's, streamed
(``chat.completion.chunk`` events, ``data: [DONE]``) or not (``chat.completion`` with
``usage``). A request refused before any text gets a JSON error with its status; a failure
after the stream began (its worker died, shutdown) ends the stream with ``data: {"error":
{...}}``. The events ready at a time go out in one write; a client that goes away mid-stream
has its request cancelled at once (the slot is freed).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from aiohttp import web

from nanochat.plugins.server.pool import Failure, Job, Overloaded, Piece, Unavailable
from nanochat.plugins.server.protocol import (
    NANOCHAT_DEFAULTS,
    OPENAI_DEFAULTS,
    ApiError,
    ChatRequest,
    Defaults,
    bad,
    parse_chat_request,
    parse_json,
)
from nanochat.plugins.server.state import STATE, ServerState

log = logging.getLogger(__name__)

OPENAI_FINISH = {"stop": "stop", "length": "length", "context": "length"}
LARGE_CONVERSATION_CHARS = 65_536  # rendered in a thread beyond this, not on the event loop


async def _read_request(request: web.Request, defaults: Defaults, openai: bool) -> ChatRequest:
    """The checked request body."""
    state = request.app[STATE]
    limit = state.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise web.HTTPRequestEntityTooLarge(max_size=limit, actual_size=request.content_length)
    body = parse_json(await request.read())
    return parse_chat_request(
        body,
        defaults,
        max_messages=state.max_messages,
        vocab_size=state.tokenizer.vocab_size,
        context=state.context,
        openai=openai,
    )


def _render(state: ServerState, chat: ChatRequest) -> list[int]:
    """The prompt ids, checked against the model's context.

    Raises:
        ApiError: a message or the whole conversation does not fit the context.
    """
    from nanochat.core.conversation import render_for_completion
    from nanochat.core.data import DataError

    try:
        ids = render_for_completion(state.tokenizer, chat.messages)
    except DataError as exc:
        raise bad(str(exc), "messages") from None
    room = state.context - 1
    if len(ids) <= room:
        return ids
    lengths = state.tokenizer.encode_batch([str(m["content"]) for m in chat.messages])
    for i, tokens in enumerate(lengths):
        if len(tokens) >= room:
            raise bad(
                f"messages[{i}] is too long: {len(tokens)} tokens; the model's context holds "
                f"{state.context}",
                f"messages[{i}].content",
                "context_length_exceeded",
            )
    raise bad(
        f"the conversation is too long: {len(ids)} tokens; the model's context holds "
        f"{state.context} (at most {room} for the prompt); drop earlier messages",
        "messages",
        "context_length_exceeded",
    )


async def _start(request: web.Request, chat: ChatRequest) -> tuple[Job, int]:
    """Render and submit; returns the job and the prompt's length."""
    state = request.app[STATE]
    if state.draining:
        raise ApiError(
            503, "the server is shutting down", "service_unavailable", headers={"Retry-After": "5"}
        )
    if sum(len(str(m["content"])) for m in chat.messages) > LARGE_CONVERSATION_CHARS:
        ids = await asyncio.get_running_loop().run_in_executor(None, _render, state, chat)
    else:
        ids = _render(state, chat)
    params = {
        "max_tokens": chat.max_tokens or state.max_tokens_default,
        "temperature": chat.temperature,
        "top_k": chat.top_k,
        "top_p": chat.top_p,
        "seed": chat.seed,
    }
    job = Job(ids, params, chat.stop)
    try:
        state.pool.submit(job)
    except Overloaded as exc:
        raise ApiError(
            503,
            f"the server is busy ({exc}); retry shortly",
            "server_overloaded",
            code="queue_full",
            headers={"Retry-After": "1"},
        ) from None
    except Unavailable as exc:
        raise ApiError(
            503,
            f"the server cannot generate: {exc}",
            "service_unavailable",
            headers={"Retry-After": "5"},
        ) from None
    return job, len(ids)


async def _items(job: Job) -> AsyncIterator[Piece | Failure]:
    """The job's output until its last piece or a failure."""
    while True:
        item = await job.output.get()
        yield item
        if isinstance(item, Failure) or item.finish is not None:
            return


def _failure_error(failure: Failure) -> ApiError:
    return ApiError(failure.status, failure.message, failure.type)


def _sse(payload: dict[str, Any] | str) -> bytes:
    text = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


def _event_stream() -> web.StreamResponse:
    """An SSE response, not yet begun: the handler keeps it before ``prepare`` can fail (a
    client gone in the meantime), so it always has one to return (aiohttp then ends quietly)."""
    return web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )


async def nanochat_chat(request: web.Request) -> web.StreamResponse:
    """``POST /chat/completions``: nanochat's streaming protocol (see the module docstring)."""
    chat = await _read_request(request, NANOCHAT_DEFAULTS, openai=False)
    job, prompt_tokens = await _start(request, chat)
    started = time.perf_counter()
    response: web.StreamResponse | None = None
    finish = "cancelled"
    pending = bytearray()
    try:
        async for item in _items(job):
            if isinstance(item, Failure):
                finish = "error"
                if response is None:
                    raise _failure_error(item)
                await response.write(bytes(pending) + _sse(_failure_error(item).body()))
                break
            if response is None:
                response = _event_stream()
                await response.prepare(request)
            if item.text:
                pending += _sse({"token": item.text, "gpu": job.worker})
            if item.finish is not None:
                finish = item.finish
                pending += _sse({"done": True, "finish_reason": item.finish})
            if pending and (job.output.empty() or item.finish is not None):  # one write
                await response.write(bytes(pending))
                pending.clear()
        assert response is not None
        await response.write_eof()
    except ConnectionError:  # the client went away mid-stream; its slot is freed below
        finish = "disconnected"
        if response is None:
            raise
    finally:
        request.app[STATE].pool.cancel(job)
        _log_completion(job, prompt_tokens, finish, started)
    return response


async def openai_chat(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``: OpenAI's chat completions, streamed or not."""
    state = request.app[STATE]
    chat = await _read_request(request, OPENAI_DEFAULTS, openai=True)
    job, prompt_tokens = await _start(request, chat)
    started = time.perf_counter()
    finish = "cancelled"
    ident = f"chatcmpl-{uuid.uuid4().hex[:24]}"
    created = int(time.time())
    head = {"id": ident, "created": created, "model": state.model_id}

    def usage() -> dict[str, int]:
        return {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": job.tokens,
            "total_tokens": prompt_tokens + job.tokens,
        }

    def chunk(delta: dict[str, Any], reason: str | None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return _sse({**head, "object": "chat.completion.chunk", "choices": [choice]})

    response: web.StreamResponse | None = None
    pending = bytearray()
    try:
        if not chat.stream:
            texts = []
            async for item in _items(job):
                if isinstance(item, Failure):
                    finish = "error"
                    raise _failure_error(item)
                texts.append(item.text)
                finish = item.finish or finish
            message = {"role": "assistant", "content": "".join(texts)}
            choice = {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": OPENAI_FINISH.get(finish, finish),
            }
            return web.json_response(
                {**head, "object": "chat.completion", "choices": [choice], "usage": usage()}
            )
        async for item in _items(job):
            if isinstance(item, Failure):
                finish = "error"
                if response is None:
                    raise _failure_error(item)
                await response.write(bytes(pending) + _sse(_failure_error(item).body()))
                await response.write_eof()
                return response
            if response is None:
                response = _event_stream()
                await response.prepare(request)
                pending += chunk({"role": "assistant", "content": ""}, None)
            if item.text:
                pending += chunk({"content": item.text}, None)
            if item.finish is not None:
                finish = item.finish
                pending += chunk({}, OPENAI_FINISH.get(item.finish, item.finish))
            if pending and (job.output.empty() or item.finish is not None):  # one write
                await response.write(bytes(pending))
                pending.clear()
        assert response is not None
        if chat.include_usage:
            await response.write(
                _sse({**head, "object": "chat.completion.chunk", "choices": [], "usage": usage()})
            )
        await response.write(_sse("[DONE]"))
        await response.write_eof()
        return response
    except ConnectionError:  # the client went away mid-stream; its slot is freed below
        finish = "disconnected"
        if response is None:
            raise
        return response
    finally:
        state.pool.cancel(job)
        _log_completion(job, prompt_tokens, finish, started)


def _log_completion(job: Job, prompt_tokens: int, finish: str, started: float) -> None:
    """One line per answer: sizes and timing, never the text."""
    log.info(
        "completion worker=%s prompt_tokens=%d completion_tokens=%d finish=%s seconds=%.3f",
        job.worker,
        prompt_tokens,
        job.tokens,
        finish,
        time.perf_counter() - started,
    )

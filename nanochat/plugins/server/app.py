"""The HTTP side of the chat server: routes, authentication, errors, streaming.

Routes:

``GET /``
    the web UI (``static/index.html`` of this package; 404 JSON while it is not installed).
``POST /chat/completions``
    nanochat's protocol: ``{"messages": [...], "temperature"?, "top_k"?, "top_p"?,
    "max_tokens"?, "seed"?, "stop"?}`` answered with ``text/event-stream``: one
    ``data: {"token": TEXT, "gpu": WORKER}`` per piece of text, then ``data: {"done": true,
    "finish_reason": "stop" | "length" | "context"}``. A request refused before any text is a
    JSON 4xx/5xx; a failure after the stream started is ``data: {"error": {...}}`` as the last
    event. Text is readable: tool calls show as ``[calculator: 6*7] = 42``, special tokens never.
``POST /v1/chat/completions``, ``GET /v1/models``, ``GET /v1/models/{id}``
    OpenAI's API (``stream`` true or false, ``usage``, ``finish_reason``, ``max_tokens``,
    ``temperature``, ``top_p``, ``seed``, ``stop``; ``top_k`` too).
``GET /health``
    liveness (no key needed); 503 when no worker is alive or the server is shutting down.
``GET /stats``
    workers (alive, busy and free slots, tokens served), queue length, totals.

Every error body is ``{"error": {"message", "type", "param", "code"}}`` (OpenAI's shape).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from nanochat.plugins.server.pool import Failure, Job, Overloaded, Piece, Unavailable, WorkerPool
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

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
OPEN_PATHS = frozenset({"/", "/health"})
OPENAI_FINISH = {"stop": "stop", "length": "length", "context": "length"}
LARGE_CONVERSATION_CHARS = 65_536  # rendered in a thread beyond this, not on the event loop
UI_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
        "'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


@dataclass
class ServerState:
    """What the handlers share.

    Attributes:
        pool: the worker pool.
        tokenizer: the run's tokenizer (prompts are rendered here, checked against the context).
        context: the model's context in tokens.
        model_id: the name ``/v1/models`` gives the served model.
        checkpoint: ``stage/step_N`` served.
        max_messages: most messages per request.
        max_tokens_default: answer budget without ``max_tokens``.
        api_key: required bearer token ("" for none).
    """

    pool: WorkerPool
    tokenizer: Any
    context: int
    model_id: str
    checkpoint: str
    max_messages: int = 256
    max_tokens_default: int = 1024
    api_key: str = ""
    draining: bool = False
    created: int = field(default_factory=lambda: int(time.time()))


STATE = web.AppKey("state", ServerState)


# --- middlewares -----------------------------------------------------------------------------


def error_json(error: ApiError) -> web.Response:
    """The JSON response of ``error``."""
    return web.json_response(error.body(), status=error.status, headers=error.headers)


@web.middleware
async def errors_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """Turn every refusal into the JSON error shape (aiohttp's own 404/405/413 included)."""
    try:
        return await handler(request)
    except ApiError as error:
        return error_json(error)
    except web.HTTPRequestEntityTooLarge:
        limit = request.app._client_max_size  # noqa: SLF001 - aiohttp keeps it there
        return error_json(
            ApiError(
                413,
                f"the request body is too large (limit {limit} bytes)",
                param=None,
                code="request_too_large",
            )
        )
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        kind = "not_found_error" if exc.status == 404 else "invalid_request_error"
        message = f"{request.method} {request.path}: {exc.reason}"
        allow = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else {}
        return error_json(ApiError(exc.status, message, kind, headers=allow))


@web.middleware
async def auth_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """With an API key set, every route but ``/`` and ``/health`` needs ``Bearer KEY``."""
    key = request.app[STATE].api_key
    if key and request.path not in OPEN_PATHS:
        given = request.headers.get("Authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            token.strip().encode(), key.encode()
        ):
            what = "missing" if not given else "wrong"
            raise ApiError(
                401,
                f"{what} API key: send the header 'Authorization: Bearer KEY'",
                "authentication_error",
                code="invalid_api_key",
                headers={"WWW-Authenticate": "Bearer"},
            )
    return await handler(request)


# --- plain routes ----------------------------------------------------------------------------


async def index(request: web.Request) -> web.StreamResponse:
    """The web UI page."""
    page = STATIC / "index.html"
    if not page.is_file():
        raise ApiError(
            404,
            "web UI not installed (nanochat/plugins/server/static/index.html is missing); "
            "the API routes work",
            "not_found_error",
            code="web_ui_not_installed",
        )
    return web.FileResponse(page, headers={**UI_HEADERS, "Content-Type": "text/html"})


async def health(request: web.Request) -> web.Response:
    """Liveness: 200 while a worker is alive and the server takes requests."""
    state = request.app[STATE]
    alive = len(state.pool.alive)
    status = "draining" if state.draining else ("ok" if alive else "unavailable")
    body = {
        "status": status,
        "workers_alive": alive,
        "workers": len(state.pool.workers),
        "model": state.model_id,
        "checkpoint": state.checkpoint,
    }
    return web.json_response(body, status=200 if status == "ok" else 503)


async def stats(request: web.Request) -> web.Response:
    """Workers, slots, queue and token counts."""
    state = request.app[STATE]
    body = {"model": state.model_id, "checkpoint": state.checkpoint, **state.pool.stats()}
    return web.json_response(body)


def _model_card(state: ServerState) -> dict[str, Any]:
    return {
        "id": state.model_id,
        "object": "model",
        "created": state.created,
        "owned_by": "nanochat",
    }


async def list_models(request: web.Request) -> web.Response:
    """OpenAI's model list: the one model served."""
    return web.json_response({"object": "list", "data": [_model_card(request.app[STATE])]})


async def get_model(request: web.Request) -> web.Response:
    """OpenAI's model lookup."""
    state = request.app[STATE]
    if request.match_info["model"] != state.model_id:
        raise ApiError(
            404,
            f"no model {request.match_info['model']!r}; this server serves {state.model_id!r}",
            "not_found_error",
            "model",
            "model_not_found",
        )
    return web.json_response(_model_card(state))


# --- generation ------------------------------------------------------------------------------


async def _read_request(request: web.Request, defaults: Defaults, openai: bool) -> ChatRequest:
    """The checked request body."""
    state = request.app[STATE]
    if request.content_length is not None and request.content_length > request.app._client_max_size:  # noqa: SLF001
        raise web.HTTPRequestEntityTooLarge(
            max_size=request.app._client_max_size,
            actual_size=request.content_length,  # noqa: SLF001
        )
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


async def _event_stream(request: web.Request) -> web.StreamResponse:
    response = web.StreamResponse(
        headers={
            "Content-Type": "text/event-stream; charset=utf-8",
            "Cache-Control": "no-cache",
            "X-Accel-Buffering": "no",
        }
    )
    await response.prepare(request)
    return response


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
                response = await _event_stream(request)
            if item.text:
                pending += _sse({"token": item.text, "gpu": job.worker})
            if item.finish is not None:
                finish = item.finish
                pending += _sse({"done": True, "finish_reason": item.finish})
            if job.output.empty() or item.finish is not None:  # one write for what is ready
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
                response = await _event_stream(request)
                pending += chunk({"role": "assistant", "content": ""}, None)
            if item.text:
                pending += chunk({"content": item.text}, None)
            if item.finish is not None:
                finish = item.finish
                pending += chunk({}, OPENAI_FINISH.get(item.finish, item.finish))
            if job.output.empty() or item.finish is not None:  # one write for what is ready
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


def build_app(state: ServerState, max_body_bytes: int) -> web.Application:
    """The aiohttp application of ``state``."""
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware], client_max_size=max_body_bytes
    )
    app[STATE] = state
    app.router.add_get("/", index)
    app.router.add_get("/health", health)
    app.router.add_get("/stats", stats)
    app.router.add_post("/chat/completions", nanochat_chat)
    app.router.add_post("/v1/chat/completions", openai_chat)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", get_model)
    return app

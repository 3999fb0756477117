"""The HTTP side of the chat server: routes, authentication, errors (the generation routes are
in :mod:`nanochat.plugins.server.completions`).

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

import hmac
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from nanochat.plugins.server.completions import nanochat_chat, openai_chat
from nanochat.plugins.server.protocol import ApiError
from nanochat.plugins.server.state import STATE, ServerState

log = logging.getLogger(__name__)

STATIC = Path(__file__).resolve().parent / "static"
OPEN_PATHS = frozenset({"/", "/health"})
UI_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' "
        "'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}


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
        limit = request.app[STATE].max_body_bytes
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


# --- the application -------------------------------------------------------------------------


def build_app(state: ServerState) -> web.Application:
    """The aiohttp application of ``state``."""
    app = web.Application(
        middlewares=[errors_middleware, auth_middleware], client_max_size=state.max_body_bytes
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

"""What the HTTP handlers of the chat server share."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from nanochat.plugins.server.pool import WorkerPool


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
        max_body_bytes: largest request body (413 beyond).
        api_key: required bearer token ("" for none).
        draining: set at shutdown: new requests get 503.
        created: when the server started (Unix time; OpenAI's ``created`` of the model).
    """

    pool: WorkerPool
    tokenizer: Any
    context: int
    model_id: str
    checkpoint: str
    max_messages: int = 256
    max_tokens_default: int = 1024
    max_body_bytes: int = 1_048_576
    api_key: str = ""
    draining: bool = False
    created: int = field(default_factory=lambda: int(time.time()))


STATE = web.AppKey("state", ServerState)

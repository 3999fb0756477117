"""Options of the built-in ``aiohttp`` chat server (no aiohttp or torch import here)."""

from __future__ import annotations

from dataclasses import dataclass

from nanochat.core.config import option


@dataclass
class ServerOptions:
    """How the chat server listens, where it generates, and what it accepts.

    Attributes:
        host: address to bind (127.0.0.1: this machine only; 0.0.0.0 opens it to the network).
        port: TCP port (0: any free port, printed at start).
        workers: model replicas on the CPU, one process each (ignored with ``devices``).
        devices: comma-separated devices, one worker process each (``cuda:0,cuda:1``); empty:
            ``workers`` replicas on the CPU, or one worker on the GPU when there is one.
        max_batch: slots of each worker's engine (requests decoding together).
        queue_size: requests that may wait for a free slot; beyond that the server answers 503.
        api_key: required as ``Authorization: Bearer KEY`` (empty: the ``NANOCHAT_API_KEY``
            environment variable, or no authentication when that is unset too).
        source: stage whose newest checkpoint to serve (empty: the newest chat checkpoint).
        max_body_bytes: largest request body accepted (413 beyond).
        max_messages: most messages in one conversation.
        max_tokens_default: answer budget when a request gives no ``max_tokens`` (the model's
            context still caps it).
        threads: torch threads per CPU worker (0: torch's default for a single CPU worker, the
            cores divided among several).
        shutdown_timeout_s: on SIGTERM/SIGINT, how long running answers may go on before they
            are cut.
        access_log: log one line per request (method, path, status, size, time; never message
            content).
    """

    host: str = option("127.0.0.1")
    port: int = option(8000, ge=0, le=65535)
    workers: int = option(1, ge=1, le=256)
    devices: str = option("")
    max_batch: int = option(8, ge=1, le=4096)
    queue_size: int = option(64, ge=0, le=1_000_000)
    api_key: str = option("")
    source: str = option("")
    max_body_bytes: int = option(1_048_576, ge=1024, le=1_073_741_824)
    max_messages: int = option(256, ge=1, le=100_000)
    max_tokens_default: int = option(1024, ge=1, le=1_048_576)
    threads: int = option(0, ge=0, le=1024)
    shutdown_timeout_s: float = option(10.0, ge=0, le=3600)
    access_log: bool = option(True)

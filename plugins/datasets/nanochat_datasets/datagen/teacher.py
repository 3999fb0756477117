"""One chat request to an OpenAI-compatible teacher, retried on what is worth retrying.

Every way a teacher can answer badly ends as a :class:`TeacherError` with a short ``cause``:
``http-429`` / ``http-5xx`` (retried, honouring ``Retry-After``), ``timeout`` and ``connection``
(retried), ``non-json`` (a body or stream event that is not JSON), ``truncated`` (a stream or
body that ends early), ``empty-choices`` (no answer in it), ``stream-error`` (an error event in
the stream) — all retried — and the other 4xx, which are not. ``401``, ``403`` and ``404`` are
``fatal``: no later request would do better, so the run stops with that message.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import aiohttp

from nanochat.core.datagen import DatagenJob, TeacherReply
from nanochat_datasets.datagen.pacing import TokenBucket, backoff_delay, parse_retry_after

log = logging.getLogger(__name__)

FATAL_STATUSES = frozenset({401, 403, 404})
MAX_ERROR_TEXT = 300


@dataclass(frozen=True)
class TeacherConfig:
    """Where the teacher is and how to talk to it.

    Attributes:
        url: the full ``.../chat/completions`` URL.
        model: the ``model`` field of every request.
        api_key: sent as ``Authorization: Bearer KEY`` when set.
        timeout_s: the most one request may take, answer included.
        retries: attempts after the first for a retryable failure.
        backoff_s: the first retry's delay ceiling (doubled each retry).
        max_backoff_s: the largest delay ceiling.
        stream: ask for a server-sent event stream (``stream: true``).
    """

    url: str
    model: str
    api_key: str | None = None
    timeout_s: float = 120.0
    retries: int = 5
    backoff_s: float = 1.0
    max_backoff_s: float = 60.0
    stream: bool = True


def chat_url(endpoint: str) -> str:
    """The chat-completions URL of an endpoint given as a base (``http://h:8000/v1``) or in full.

    Raises:
        ValueError: not an ``http://`` or ``https://`` URL.
    """
    text = endpoint.strip()
    if not text.startswith(("http://", "https://")) or len(text.split("://", 1)[1]) == 0:
        raise ValueError(f"--endpoint must be an http:// or https:// URL, not {endpoint!r}")
    text = text.rstrip("/")
    return text if text.endswith("/chat/completions") else f"{text}/chat/completions"


class TeacherError(Exception):
    """A request that did not give an answer.

    Attributes:
        cause: a short name of what went wrong (counted in the usage summary).
        retryable: whether trying again may help.
        fatal: whether the whole run should stop (bad key, wrong URL).
        retry_after: seconds the server asked to wait, if it said.
    """

    def __init__(
        self,
        cause: str,
        detail: str = "",
        retryable: bool = True,
        fatal: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause
        self.detail = detail
        self.retryable = retryable and not fatal
        self.fatal = fatal
        self.retry_after = retry_after


@dataclass
class Usage:
    """What a run cost: requests, retries, failed attempts by cause, tokens."""

    requests: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: Counter[str] = field(default_factory=Counter)

    def add(self, other: Usage) -> None:
        """Add ``other``'s counts to these."""
        self.requests += other.requests
        self.retries += other.retries
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.errors.update(other.errors)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-friendly form."""
        return {
            "requests": self.requests,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "errors": dict(sorted(self.errors.items())),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Usage:
        """The inverse of :meth:`as_dict`."""
        return cls(
            requests=int(data.get("requests", 0)),
            retries=int(data.get("retries", 0)),
            prompt_tokens=int(data.get("prompt_tokens", 0)),
            completion_tokens=int(data.get("completion_tokens", 0)),
            errors=Counter({str(k): int(v) for k, v in dict(data.get("errors", {})).items()}),
        )


def _error_text(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("error"), dict):
            text = str(data["error"].get("message", text))
    except ValueError:
        pass
    line = text.splitlines()[0] if text else ""
    return line[:MAX_ERROR_TEXT]


def _count_usage(usage: Any, into: Usage) -> None:
    if not isinstance(usage, dict):
        return
    for name in ("prompt_tokens", "completion_tokens"):
        value = usage.get(name)
        if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
            setattr(into, name, getattr(into, name) + value)


def _from_completion(data: Any, usage: Usage) -> TeacherReply:
    if not isinstance(data, dict):
        raise TeacherError("non-json", "the answer is not a JSON object")
    if "error" in data and not data.get("choices"):
        raise TeacherError("api-error", _error_text(json.dumps(data).encode()))
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TeacherError("empty-choices", "the answer has no choices")
    message = choices[0].get("message")
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise TeacherError("empty-choices", "the first choice has no message content")
    _count_usage(data.get("usage"), usage)
    finish = choices[0].get("finish_reason")
    return TeacherReply(content, finish if isinstance(finish, str) else None)


async def _read_stream(response: aiohttp.ClientResponse, usage: Usage) -> TeacherReply:
    pieces: list[str] = []
    finish: str | None = None
    seen_choice = False
    done = False
    buffer = b""
    async for chunk in response.content.iter_any():
        buffer += chunk
        *lines, buffer = buffer.split(b"\n")
        for raw in lines:
            line = raw.decode("utf-8", "replace").strip()
            if not line.startswith("data:"):
                continue
            payload = line[len("data:") :].strip()
            if payload == "[DONE]":
                done = True
                break
            try:
                event = json.loads(payload)
            except ValueError:
                raise TeacherError("non-json", "a stream event is not JSON") from None
            if not isinstance(event, dict):
                raise TeacherError("non-json", "a stream event is not a JSON object")
            if "error" in event:
                raise TeacherError("stream-error", _error_text(payload.encode()))
            _count_usage(event.get("usage"), usage)
            for choice in event.get("choices") or []:
                if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                    continue
                seen_choice = True
                delta = choice.get("delta")
                if isinstance(delta, dict) and isinstance(delta.get("content"), str):
                    pieces.append(delta["content"])
                if isinstance(choice.get("finish_reason"), str):
                    finish = choice["finish_reason"]
        if done:
            break
    if not done:
        raise TeacherError("truncated", "the stream ended before [DONE]")
    if not seen_choice:
        raise TeacherError("empty-choices", "the stream held no choices")
    return TeacherReply("".join(pieces), finish)


async def request_once(
    session: aiohttp.ClientSession, config: TeacherConfig, job: DatagenJob, usage: Usage
) -> TeacherReply:
    """Send ``job`` to the teacher once.

    Raises:
        TeacherError: any way of not getting an answer (see the module docstring).
    """
    body: dict[str, Any] = {"model": config.model, "messages": job.messages, **job.params}
    body["stream"] = config.stream
    if config.stream:
        body["stream_options"] = {"include_usage": True}
    headers = {"X-Datagen-Job": job.key}
    if config.api_key:
        headers["Authorization"] = f"Bearer {config.api_key}"
    timeout = aiohttp.ClientTimeout(total=config.timeout_s)
    try:
        async with session.post(config.url, json=body, headers=headers, timeout=timeout) as resp:
            if resp.status != 200:
                text = _error_text(await resp.read())
                raise TeacherError(
                    f"http-{resp.status}",
                    text,
                    retryable=resp.status in (408, 409, 425, 429) or resp.status >= 500,
                    fatal=resp.status in FATAL_STATUSES,
                    retry_after=parse_retry_after(resp.headers.get("Retry-After")),
                )
            if resp.content_type == "text/event-stream":
                return await _read_stream(resp, usage)
            raw = await resp.read()
            try:
                data = json.loads(raw)
            except ValueError:
                raise TeacherError("non-json", "the answer is not JSON") from None
            return _from_completion(data, usage)
    except TeacherError:
        raise
    except TimeoutError:
        raise TeacherError("timeout", f"no complete answer in {config.timeout_s:g}s") from None
    except aiohttp.ClientPayloadError as exc:
        raise TeacherError("truncated", str(exc).splitlines()[0][:MAX_ERROR_TEXT]) from None
    except (aiohttp.ClientError, OSError) as exc:
        detail = str(exc).splitlines()[0][:MAX_ERROR_TEXT] if str(exc) else type(exc).__name__
        raise TeacherError("connection", detail) from None


async def ask_teacher(
    session: aiohttp.ClientSession,
    config: TeacherConfig,
    job: DatagenJob,
    bucket: TokenBucket,
    usage: Usage,
    rng: random.Random | None = None,
) -> TeacherReply:
    """Send ``job`` to the teacher, retrying retryable failures with backoff.

    Each attempt waits for a token of ``bucket`` first. A retry waits what ``Retry-After`` asked
    when the server said, else an exponential backoff with jitter.

    Raises:
        TeacherError: the last attempt's failure (or the first fatal or non-retryable one).
    """
    rng = rng or random.Random()
    attempt = 0
    while True:
        await bucket.acquire()
        usage.requests += 1
        try:
            return await request_once(session, config, job, usage)
        except TeacherError as exc:
            usage.errors[exc.cause] += 1
            if not exc.retryable or attempt >= config.retries:
                raise
            delay = exc.retry_after
            if delay is None:
                delay = backoff_delay(attempt, config.backoff_s, config.max_backoff_s, rng)
            log.debug("job %s: %s; retrying in %.2fs", job.key, exc, delay)
            usage.retries += 1
            attempt += 1
            await asyncio.sleep(delay)

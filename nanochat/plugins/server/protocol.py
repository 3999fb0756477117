"""Reading chat requests: JSON bodies checked field by field into a :class:`ChatRequest`.

Both routes take the same fields; they differ in their defaults (nanochat's own route samples
like ``nanochat chat``: temperature 0.6, top-k 50; the OpenAI route like OpenAI: temperature 1,
no top-k) and in how errors and answers are shaped (see :mod:`nanochat.plugins.server.app`).
Every problem becomes an :class:`ApiError` with an HTTP status, one clear message and the
offending parameter; nothing in here raises anything else for any input.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any, cast

from nanochat.core.data import Message

ROLES = ("system", "user", "assistant")
MAX_STOP_SEQUENCES = 4
MAX_STOP_CHARS = 64
SEED_RANGE = (-(2**63), 2**63 - 1)
TEMPERATURE_RANGE = (0.0, 2.0)


class ApiError(Exception):
    """A request the server refuses, with what the client is told.

    Args:
        status: the HTTP status (4xx for the client's fault, 5xx for the server's).
        message: one line saying what is wrong and, where it helps, what to do.
        type: OpenAI's error type (``invalid_request_error``, ``authentication_error``, ...).
        param: the request field at fault, if one is.
        code: a machine-readable code, if there is one.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        """The JSON error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


def bad(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 400 ``invalid_request_error``."""
    return ApiError(400, message, "invalid_request_error", param, code)


@dataclass(frozen=True)
class Defaults:
    """Sampling defaults of one route."""

    temperature: float
    top_k: int | None


NANOCHAT_DEFAULTS = Defaults(temperature=0.6, top_k=50)
OPENAI_DEFAULTS = Defaults(temperature=1.0, top_k=None)


@dataclass
class ChatRequest:
    """A checked chat request.

    Attributes:
        messages: ``{"role", "content"}`` dicts with string content, ending with a user turn.
        temperature: 0 is greedy.
        top_k: None: off.
        top_p: None: off.
        max_tokens: None: the server's default budget.
        seed: None: a fresh one.
        stop: strings that end the answer (not included in it).
        stream: answer as server-sent events (the OpenAI route; nanochat's route always streams).
        include_usage: OpenAI streaming: a last chunk with the token counts.
    """

    messages: list[Message]
    temperature: float
    top_k: int | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    stream: bool = True
    include_usage: bool = False


def parse_json(body: bytes) -> dict[str, Any]:
    """The JSON object in ``body``.

    Raises:
        ApiError: not UTF-8, not JSON (NaN and Infinity included), or not an object.
    """

    def no_constants(name: str) -> Any:
        raise ValueError(f"{name} is not valid JSON")

    try:
        value = json.loads(body.decode("utf-8"), parse_constant=no_constants)
    except UnicodeDecodeError:
        raise bad("the request body is not UTF-8 text") from None
    except (ValueError, RecursionError) as exc:
        raise bad(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise bad(f"the request body must be a JSON object, not {_json_type(value)}")
    return value


def _json_type(value: Any) -> str:
    """The JSON name of a parsed value's type."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _number(
    body: dict[str, Any], name: str, low: float, high: float, *, low_open: bool = False
) -> float | None:
    """An optional number in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise bad(f"{name} must be a number, not {_json_type(value)}", name)
    value = float(value)
    too_low = value <= low if low_open else value < low
    if not math.isfinite(value) or too_low or value > high:
        opening = "(" if low_open else "["
        raise bad(f"{name} must be in {opening}{low:g}, {high:g}], not {value:g}", name)
    return value


def _integer(body: dict[str, Any], name: str, low: int, high: int) -> int | None:
    """An optional integer in ``[low, high]``."""
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad(f"{name} must be an integer, not {_json_type(value)}", name)
    if not low <= value <= high:
        raise bad(f"{name} must be in [{low}, {high}], not {value}", name)
    return value


def _content(value: Any, index: int) -> str:
    """A message's text: a string, or OpenAI's list of ``{"type": "text", "text": ...}`` parts."""
    where = f"messages[{index}].content"
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        texts = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise bad(f"{where}: only text parts are supported", where)
            if not isinstance(part.get("text"), str):
                raise bad(f"{where}: a text part needs a string 'text'", where)
            texts.append(part["text"])
        return "".join(texts)
    raise bad(f"{where} must be a string, not {_json_type(value)}", where)


def parse_messages(value: Any, max_messages: int) -> list[Message]:
    """Check the ``messages`` field.

    Raises:
        ApiError: missing or empty, not a list, too many, an unknown role, content that is not
            text, a system message anywhere but first, or no user turn at the end.
    """
    if value is None:
        raise bad("messages is required: a list of {role, content} objects", "messages")
    if not isinstance(value, list):
        raise bad(f"messages must be an array, not {_json_type(value)}", "messages")
    if not value:
        raise bad("messages is empty; send at least one user message", "messages")
    if len(value) > max_messages:
        raise bad(
            f"too many messages: {len(value)} (at most {max_messages})", "messages", "too_many"
        )
    messages: list[Message] = []
    for i, message in enumerate(value):
        if not isinstance(message, dict):
            raise bad(f"messages[{i}] must be an object, not {_json_type(message)}", "messages")
        role = message.get("role")
        if not isinstance(role, str) or role not in ROLES:
            shown = role if isinstance(role, str) else _json_type(role)
            raise bad(
                f"messages[{i}].role must be one of {', '.join(ROLES)}, not {shown!r}",
                f"messages[{i}].role",
            )
        if role == "system" and i > 0:
            raise bad(f"messages[{i}]: a system message may only come first", "messages")
        if "content" not in message:
            raise bad(f"messages[{i}] has no content", f"messages[{i}].content")
        text = _content(message["content"], i)
        messages.append(cast(Message, {"role": role, "content": text}))
    if messages[-1]["role"] != "user":
        raise bad("the last message must be the user's (the one to answer)", "messages")
    return messages


def parse_stop(value: Any) -> list[str]:
    """Check ``stop``: a string or a list of at most 4 non-empty strings."""
    if value is None:
        return []
    stops = [value] if isinstance(value, str) else value
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad("stop must be a string or an array of strings", "stop")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise bad(f"stop takes at most {MAX_STOP_SEQUENCES} sequences", "stop")
    if any(not s or len(s) > MAX_STOP_CHARS for s in stops):
        raise bad(f"each stop sequence must have 1 to {MAX_STOP_CHARS} characters", "stop")
    return list(stops)


def parse_chat_request(
    body: dict[str, Any],
    defaults: Defaults,
    *,
    max_messages: int,
    vocab_size: int,
    context: int,
    openai: bool = False,
) -> ChatRequest:
    """Check every field of a chat request (unknown fields are ignored, as OpenAI clients send
    many).

    Args:
        body: the parsed JSON object.
        defaults: the route's sampling defaults.
        max_messages: most messages allowed.
        vocab_size: the tokenizer's (top_k's upper bound).
        context: the model's context in tokens (max_tokens's upper bound).
        openai: also read ``stream``, ``stream_options`` and ``n`` (OpenAI's route).

    Raises:
        ApiError: the first problem found (400).
    """
    messages = parse_messages(body.get("messages"), max_messages)
    temperature = _number(body, "temperature", *TEMPERATURE_RANGE)
    top_k = _integer(body, "top_k", 0, vocab_size)
    top_p = _number(body, "top_p", 0.0, 1.0, low_open=True)
    max_tokens = _integer(body, "max_tokens", 1, context)
    if openai and max_tokens is None:  # OpenAI's newer name
        max_tokens = _integer(body, "max_completion_tokens", 1, context)
    seed = _integer(body, "seed", *SEED_RANGE)
    stop = parse_stop(body.get("stop"))
    stream, include_usage = True, False
    if openai:
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise bad(f"stream must be true or false, not {_json_type(stream)}", "stream")
        options = body.get("stream_options")
        if options is not None:
            if not isinstance(options, dict) or not isinstance(
                options.get("include_usage", False), bool
            ):
                raise bad('stream_options must be {"include_usage": true|false}', "stream_options")
            include_usage = bool(options.get("include_usage", False))
        n = body.get("n", 1)
        if n != 1 or isinstance(n, bool):
            raise bad("only n=1 is supported (one answer per request)", "n")
    return ChatRequest(
        messages=messages,
        temperature=defaults.temperature if temperature is None else temperature,
        top_k=(defaults.top_k if top_k is None else top_k) or None,
        top_p=None if top_p is None or top_p >= 1 else top_p,
        max_tokens=max_tokens,
        seed=seed,
        stop=stop,
        stream=stream,
        include_usage=include_usage,
    )

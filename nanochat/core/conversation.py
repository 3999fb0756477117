"""The chat template: a conversation becomes token ids plus a loss mask.

One implementation, used by training (midtrain, sft), evaluation, the engine and the server::

    <|bos|>
    <|user_start|> user text <|user_end|>                          mask 0
    <|assistant_start|>                                            mask 0
      assistant text                                               mask 1
      <|python_start|> expression <|python_end|>                   mask 1
      <|output_start|> tool output <|output_end|>                  mask 0
    <|assistant_end|>                                              mask 1
    ... further turns ...

A system message is rendered between ``<|system_start|>`` and ``<|system_end|>`` (mask 0) when
the tokenizer has those tokens; otherwise its text is merged into the first user turn, followed
by a blank line. Truncation to a maximum length is explicit: :func:`render_conversation` reports
how many ids it dropped, and :func:`render_for_completion` raises rather than cut a prompt.

A tokenizer that came with a pretrained model may carry that model's own template as a
:class:`ChatFormat` (its ``chat_format`` attribute): each marker above is then rendered as the
format's text for it (e.g. ChatML's ``<|im_start|>user\n``), through this same code, with the
same masks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from nanochat.core import special_tokens as st
from nanochat.core.data import Conversation, DataError, Message


class ConversationTooLong(DataError):
    """A conversation does not fit the allowed number of tokens and may not be truncated."""


@dataclass(frozen=True)
class Rendered:
    """A rendered conversation.

    Attributes:
        ids: token ids, starting with ``<|bos|>``.
        mask: 1 where the id is a training target (assistant output), else 0; same length.
        truncated: how many ids were cut off the end to respect ``max_tokens`` (0: none).
    """

    ids: list[int]
    mask: list[int]
    truncated: int = 0

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def loss_tokens(self) -> int:
        """Number of ids that carry a loss."""
        return sum(self.mask)


@dataclass(frozen=True)
class ChatFormat:
    """A model's own chat template, as the text each of nanochat's markers stands for.

    A tokenizer that carries one (attribute ``chat_format``) renders every marker of a
    conversation (``<|user_start|>``, ``<|assistant_end|>``, ...) as ``markers[name]``, encoded
    with the tokenizer's own special tokens allowed; a marker the format lacks (e.g. the tool
    markers) cannot be rendered. The engine still stops on ``special_tokens[<|assistant_end|>]``,
    so a tokenizer with a format maps that name to the id that ends a reply.

    Attributes:
        name: the format's name (``chatml``).
        markers: nanochat marker name to the text it renders as ("" renders nothing).
        default_system: a system message used when a conversation has none (the template's own).
    """

    name: str
    markers: Mapping[str, str] = field(default_factory=dict)
    default_system: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The format as JSON-serialisable data (saved with the tokenizer)."""
        return {
            "name": self.name,
            "markers": dict(self.markers),
            "default_system": self.default_system,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChatFormat:
        """The format :meth:`to_dict` wrote."""
        return cls(str(data["name"]), dict(data["markers"]), data.get("default_system"))


def chat_format(tokenizer: Any) -> ChatFormat | None:
    """The tokenizer's own chat format, or None for nanochat's special tokens."""
    fmt = getattr(tokenizer, "chat_format", None)
    return fmt if isinstance(fmt, ChatFormat) else None


def _marker_ids(tokenizer: Any, name: str) -> list[int]:
    """The ids marker ``name`` renders as: one special token, or the chat format's text."""
    fmt = chat_format(tokenizer)
    if fmt is not None:
        if name not in fmt.markers:
            raise DataError(
                f"the chat format {fmt.name} has no {name}: conversations with tool calls need "
                "nanochat's special tokens (train on a mixture without them, e.g. "
                "-o sft.mixture=identity:4,demo-chat:0.2 -o sft.val_mixture=identity)"
            )
        text = fmt.markers[name]
        return list(tokenizer.encode(text, allowed_special="all")) if text else []
    try:
        return [int(tokenizer.special_tokens[name])]
    except KeyError:
        raise DataError(f"the tokenizer has no special token {name}") from None


def _has_system_tokens(tokenizer: Any) -> bool:
    fmt = chat_format(tokenizer)
    specials = fmt.markers if fmt is not None else tokenizer.special_tokens
    return st.SYSTEM_START in specials and st.SYSTEM_END in specials


def _segments(tokenizer: Any, conversation: Conversation) -> list[tuple[str, str | int, int]]:
    """The conversation as ``(kind, payload, mask)`` pieces; kind is ``text`` or ``special``."""
    messages: list[Message] = list(conversation)
    if not messages:
        raise DataError("cannot render an empty conversation")
    pieces: list[tuple[str, str | int, int]] = [("special", st.BOS, 0)]
    system: str | None = None
    fmt = chat_format(tokenizer)
    if messages[0]["role"] != "system" and fmt is not None and fmt.default_system is not None:
        messages = [{"role": "system", "content": fmt.default_system}, *messages]
    if messages[0]["role"] == "system":
        system = str(messages[0]["content"])
        messages = messages[1:]
        if _has_system_tokens(tokenizer):
            pieces += [("special", st.SYSTEM_START, 0), ("text", system, 0)]
            pieces.append(("special", st.SYSTEM_END, 0))
            system = None
    if system is not None:  # no system tokens: the system text opens the first user turn
        if messages and messages[0]["role"] == "user":
            merged = f"{system}\n\n{messages[0]['content']}"
            messages = [{"role": "user", "content": merged}, *messages[1:]]
        else:
            messages = [{"role": "user", "content": system}, *messages]
    for i, message in enumerate(messages):
        role, content = message["role"], message["content"]
        if role == "system":
            raise DataError(f"message {i}: a system message may only come first")
        if role == "user":
            text = content if isinstance(content, str) else "".join(p["text"] for p in content)
            pieces += [("special", st.USER_START, 0), ("text", text, 0)]
            pieces.append(("special", st.USER_END, 0))
            continue
        pieces.append(("special", st.ASSISTANT_START, 0))
        parts = [{"type": "text", "text": content}] if isinstance(content, str) else content
        for part in parts:
            if part["type"] == "text":
                pieces.append(("text", part["text"], 1))
            elif part["type"] == "python":
                pieces += [("special", st.PYTHON_START, 1), ("text", part["text"], 1)]
                pieces.append(("special", st.PYTHON_END, 1))
            elif part["type"] == "python_output":
                pieces += [("special", st.OUTPUT_START, 0), ("text", part["text"], 0)]
                pieces.append(("special", st.OUTPUT_END, 0))
            else:
                raise DataError(f"message {i}: unknown part type {part['type']!r}")
        pieces.append(("special", st.ASSISTANT_END, 1))
    return pieces


def _assemble(tokenizer: Any, pieces: Sequence[tuple[str, str | int, int]]) -> Rendered:
    texts = [str(payload) for kind, payload, _ in pieces if kind == "text"]
    encoded = iter(tokenizer.encode_batch(texts) if texts else [])
    ids: list[int] = []
    mask: list[int] = []
    for kind, payload, bit in pieces:
        new = _marker_ids(tokenizer, str(payload)) if kind == "special" else next(encoded)
        ids += new
        mask += [bit] * len(new)
    return Rendered(ids, mask)


def render_conversation(
    tokenizer: Any, conversation: Conversation, max_tokens: int | None = None
) -> Rendered:
    """Render a whole conversation to ids and a loss mask.

    Args:
        tokenizer: a tokenizer with nanochat's special tokens.
        conversation: messages of the chat schema (see :mod:`nanochat.core.data`).
        max_tokens: keep at most this many ids; the number cut is reported in
            :attr:`Rendered.truncated` (never silently).

    Returns:
        The :class:`Rendered` ids, mask and truncation count.

    Raises:
        DataError: a malformed conversation or a tokenizer without the chat special tokens.
    """
    rendered = _assemble(tokenizer, _segments(tokenizer, conversation))
    if max_tokens is not None and len(rendered) > max_tokens:
        cut = len(rendered) - max_tokens
        return Rendered(rendered.ids[:max_tokens], rendered.mask[:max_tokens], cut)
    return rendered


def render_for_completion(
    tokenizer: Any, conversation: Conversation, max_tokens: int | None = None
) -> list[int]:
    """The prompt ids for the model's next assistant turn.

    A trailing assistant message (e.g. the reference answer) is dropped, and the ids end with
    ``<|assistant_start|>``.

    Args:
        tokenizer: a tokenizer with nanochat's special tokens.
        conversation: messages ending with a user turn, or with an assistant turn to drop.
        max_tokens: the most ids the prompt may have (e.g. context minus answer budget).

    Raises:
        ConversationTooLong: the prompt needs more than ``max_tokens`` ids; a prompt is never
            cut, since a cut prompt would be a different question.
        DataError: a malformed conversation.
    """
    messages = list(conversation)
    if messages and messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if not messages or messages[-1]["role"] == "assistant":
        raise DataError("a conversation to complete needs a user turn")
    rendered = _assemble(tokenizer, _segments(tokenizer, messages))
    ids = [*rendered.ids, *_marker_ids(tokenizer, st.ASSISTANT_START)]
    if max_tokens is not None and len(ids) > max_tokens:
        raise ConversationTooLong(
            f"the prompt has {len(ids)} tokens, more than the {max_tokens} allowed"
        )
    return ids


def training_pair(ids: Sequence[int], mask: Sequence[int]) -> tuple[list[int], list[int]]:
    """Inputs and next-token targets of one rendered sequence, ``-1`` where no loss is taken.

    Args:
        ids: token ids of length ``n``.
        mask: their loss mask (1 = train on this id as a target).

    Returns:
        ``(inputs, targets)`` of length ``n - 1``: ``inputs = ids[:-1]`` and ``targets[i] =
        ids[i + 1]`` where ``mask[i + 1]`` is 1, else ``-1``.
    """
    if len(ids) != len(mask):
        raise ValueError(f"ids ({len(ids)}) and mask ({len(mask)}) differ in length")
    inputs = list(ids[:-1])
    targets = [t if m else -1 for t, m in zip(ids[1:], mask[1:], strict=True)]
    return inputs, targets

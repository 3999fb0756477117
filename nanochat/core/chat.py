"""Talking to a run's model: load its newest chat checkpoint, stream replies through the engine.

Used by ``nanochat chat`` (and by the server). The model and tokenizer are the ones the run
recorded; the checkpoint is the newest of the stages whose specs declare ``produces=("chat",
...)``, or the newest of one stage chosen with ``--source`` (a stage name or a unique prefix:
``sft``, ``mid``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from nanochat.core import special_tokens as st
from nanochat.core.checkpoint import Checkpoint
from nanochat.core.components import Tokenizer, Tool
from nanochat.core.context import RunContext
from nanochat.core.conversation import render_for_completion
from nanochat.core.data import Conversation
from nanochat.core.engine import Engine, Event, Request, SamplingParams
from nanochat.core.errors import UsageError
from nanochat.core.models import Model
from nanochat.core.registry import Registry, create_component
from nanochat.core.rundir import run_directory

# How tool calls look in a terminal: the special tokens become readable marks.
READABLE_SPECIALS: Mapping[str, str] = {
    st.PYTHON_START: "[calculator: ",
    st.PYTHON_END: "]",
    st.OUTPUT_START: " = ",
    st.OUTPUT_END: " ",
    st.ASSISTANT_END: "",
    st.BOS: "",
}


def readable(text: str) -> str:
    """``text`` with tool-call and end tokens shown as readable marks."""
    for token, shown in READABLE_SPECIALS.items():
        text = text.replace(token, shown)
    return text


@dataclass
class ChatModel:
    """A run's chat model, ready to generate."""

    model: Model
    tokenizer: Tokenizer
    checkpoint: Checkpoint
    tools: dict[str, Tool]
    runtime: Any

    @property
    def source(self) -> str:
        """``stage/step_N`` of the checkpoint."""
        return f"{self.checkpoint.path.parent.parent.name}/{self.checkpoint.path.name}"


def choose_checkpoint(ctx: RunContext, source: str | None) -> Checkpoint:
    """The newest chat checkpoint, or the newest checkpoint of the stage ``source`` names (see
    :meth:`RunContext.choose_checkpoint`)."""
    return ctx.choose_checkpoint(source, "chat")


def load_chat_model(
    registry: Registry,
    run_name: str,
    source: str | None = None,
    device: str = "auto",
    defaults: Mapping[str, str] | None = None,
    checkpoint: Checkpoint | None = None,
) -> ChatModel:
    """Load the run's chat model, its tokenizer and every installed tool.

    ``checkpoint`` pins the checkpoint (e.g. one chosen earlier by :func:`choose_checkpoint`,
    so that several processes serve the same one); otherwise ``source`` chooses it.

    Raises:
        UsageError: the run does not exist.
        StageError: the run has no such checkpoint.
    """
    from nanochat.core.metrics import Metrics
    from nanochat.core.plan import plan_run

    run_dir = run_directory(run_name)
    if not run_dir.is_dir():
        raise UsageError(f"run {run_name!r} does not exist in {run_dir.parent}")
    plan = plan_run(registry, [], run_name, device=device, defaults=defaults, require_stages=False)
    ctx = RunContext(plan, registry, run_dir, None, Metrics(run_name, [], enabled=False))
    if checkpoint is None:
        checkpoint = choose_checkpoint(ctx, source)
    tokenizer = ctx.load_tokenizer()
    runtime = ctx.runtime
    model = ctx.load_model(checkpoint).to(runtime.device)
    model.eval()
    tools = {r.spec.name: create_component(r) for r in registry.components("tool")}
    return ChatModel(model, tokenizer, checkpoint, tools, runtime)


@dataclass
class ChatSession:
    """A conversation with a chat model: each :meth:`reply` streams the assistant's answer."""

    chat: ChatModel
    params: SamplingParams
    messages: Conversation = field(default_factory=list)

    def __post_init__(self) -> None:
        self.engine = Engine(
            self.chat.model,
            self.chat.tokenizer,
            slots=1,
            tools=self.chat.tools,
            autocast=self.chat.runtime.autocast,
        )

    def clear(self) -> None:
        """Forget the conversation."""
        self.messages = []

    def reply(self, text: str, on_event: Callable[[Event], None] | None = None) -> Iterator[str]:
        """Add the user's ``text`` and stream the assistant's reply as readable text pieces.

        Raises:
            UsageError: the conversation no longer fits the model's context.
        """
        self.messages.append({"role": "user", "content": text})
        prompt = render_for_completion(self.chat.tokenizer, self.messages)
        budget = min(self.params.max_tokens, self.engine.cache.max_len - 1 - len(prompt))
        if budget < 1:
            self.messages.pop()
            raise UsageError("the conversation is too long for the model's context; /clear it")
        params = SamplingParams(**{**self.params.__dict__, "max_tokens": budget})
        answer: list[str] = []
        for event in self.engine.generate([Request(prompt, params)]):
            if on_event is not None:
                on_event(event)
            answer.append(event.text)
            piece = readable(event.text)
            if piece:
                yield piece
        reply = "".join(answer).replace(st.ASSISTANT_END, "")
        self.messages.append({"role": "assistant", "content": reply})

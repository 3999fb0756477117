"""The ``identity`` datagen template: conversations about the assistant itself.

Each job picks, from its own seeded generator, a topic (name, maker, abilities, limits, ...), a
persona who asks and a phrasing; the teacher gets the assistant's facts as a system message and
answers as the assistant. An answer is kept when it is complete (not cut by ``max_tokens``),
clean text of a sensible length without special tokens, does not claim another identity, and,
for questions about the name, says the name.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nanochat.core.data import DataError
from nanochat.core.datagen import DatagenJob, Rejected, TeacherReply
from nanochat_datasets.datagen.options import IdentityTemplateOptions

TOPICS: dict[str, tuple[str, ...]] = {
    "name": (
        "What is your name?",
        "Who are you?",
        "What should I call you?",
        "Do you have a name?",
    ),
    "creator": ("Who made you?", "Who built you?", "Who trained you?", "Where do you come from?"),
    "abilities": ("What can you do?", "How can you help me?", "What are you good at?"),
    "math": ("Can you do math?", "Do you use a calculator?", "How do you add big numbers?"),
    "limits": ("Do you know everything?", "Can you browse the internet?", "Are you always right?"),
    "nature": ("Are you a human?", "Are you conscious?", "Are you ChatGPT?", "Are you alive?"),
    "training": ("How were you trained?", "What data did you learn from?", "How big are you?"),
}
PERSONAS = (
    "a curious ten-year-old",
    "a busy software engineer",
    "a retired teacher who is new to chatbots",
    "a sceptical journalist",
    "a student learning English",
    "a researcher who studies language models",
    "someone in a hurry typing on a phone",
)
GREETINGS = ("", "Hi!", "Hello.", "Hey,", "Good morning!", "Quick question:")
OFF_IDENTITY = (
    "as an ai language model",
    "i am chatgpt",
    "i'm chatgpt",
    "developed by openai",
    "created by openai",
    "trained by openai",
)
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def default_facts(name: str, creator: str) -> list[str]:
    """What every identity answer may rely on."""
    return [
        f"Your name is {name}.",
        f"You were built by {creator}, trained from scratch: tokenizer, pretraining, "
        "mid-training and supervised fine-tuning.",
        "You are a small language model: you can make mistakes and your knowledge is limited.",
        "You use a calculator tool for arithmetic.",
        "You cannot browse the internet or remember earlier conversations.",
        "You are not a person, and you are not ChatGPT.",
    ]


def normalize(text: str) -> str:
    """Lower case, single spaces, no surrounding punctuation: what counts as "the same text"."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


class IdentityTemplate:
    """Conversations about the assistant, one user question and the teacher's answer."""

    data_kind = "chat"

    def __init__(self, options: IdentityTemplateOptions) -> None:
        self.options = options
        facts = default_facts(options.name, options.creator)
        if options.facts:
            path = Path(options.facts).expanduser()
            try:
                extra = path.read_text(encoding="utf-8").splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise DataError(f"identity.facts: cannot read {path} ({exc})") from None
            facts += [line.strip() for line in extra if line.strip()]
        self.facts = facts

    def make_job(self, seed: int, index: int) -> DatagenJob:
        """A seeded question from a seeded persona (see the module docstring)."""
        rng = random.Random(f"identity:{seed}:{index}")
        topic = rng.choice(sorted(TOPICS))
        persona = rng.choice(PERSONAS)
        question = f"{rng.choice(GREETINGS)} {rng.choice(TOPICS[topic])}".strip()
        name = self.options.name
        system = (
            f"You are {name}. Facts about you:\n"
            + "\n".join(f"- {fact}" for fact in self.facts)
            + f"\nAnswer as {name}, in one to three plain sentences that agree with these facts. "
            f"The person writing is {persona}: suit your tone to them."
        )
        messages = [{"role": "user", "content": question}]
        if self.options.system_prompt:
            messages.insert(0, {"role": "system", "content": system})
        return DatagenJob(
            key=f"identity-s{seed}-{index:07d}",
            index=index,
            messages=messages,
            params={"temperature": self.options.temperature, "max_tokens": self.options.max_tokens},
            meta={"topic": topic, "persona": persona, "question": question},
        )

    def accept(self, job: DatagenJob, reply: TeacherReply) -> dict[str, Any]:
        """The conversation (question, answer) when the answer passes every check.

        Raises:
            Rejected: ``truncated``, ``empty``, ``garbled``, ``special-tokens``, ``too-short``,
                ``too-long``, ``off-identity`` or ``missing-name``.
        """
        text = reply.text.strip() if isinstance(reply.text, str) else ""
        if reply.finish_reason == "length":
            raise Rejected("truncated", "the answer was cut by max_tokens")
        if not text:
            raise Rejected("empty")
        if "\ufffd" in text or CONTROL.search(text):
            raise Rejected("garbled", "broken characters or control codes")
        if "<|" in text and "|>" in text:
            raise Rejected("special-tokens")
        if len(text) < self.options.min_chars:
            raise Rejected("too-short", f"{len(text)} characters")
        if len(text) > self.options.max_chars:
            raise Rejected("too-long", f"{len(text)} characters")
        lowered = text.lower()
        if any(phrase in lowered for phrase in OFF_IDENTITY):
            raise Rejected("off-identity", "claims to be another assistant")
        if job.meta.get("topic") == "name" and self.options.name.lower() not in lowered:
            raise Rejected("missing-name", "a question about the name without the name")
        return {
            "messages": [
                {"role": "user", "content": str(job.meta["question"])},
                {"role": "assistant", "content": text},
            ],
            "meta": {"template": "identity", "topic": job.meta["topic"]},
        }

    def dedup_key(self, record: Mapping[str, Any]) -> str:
        """The question and the answer, normalized."""
        return "\n".join(normalize(str(m["content"])) for m in record["messages"])

    def example_reply(self, job: DatagenJob) -> str:
        """A short answer in the assistant's voice that passes the checks."""
        name, creator = self.options.name, self.options.creator
        return f"I'm {name}, a small language model built by {creator}. ({job.meta['topic']})"


def identity_template(options: IdentityTemplateOptions) -> IdentityTemplate:
    """Factory of the ``identity`` template."""
    return IdentityTemplate(options)

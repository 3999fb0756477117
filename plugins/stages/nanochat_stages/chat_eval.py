"""Validation of chat models: loss on held-out assistant tokens, and greedy sampled answers."""

from __future__ import annotations

from typing import Any

import torch

from nanochat.core.conversation import (
    ConversationTooLong,
    render_conversation,
    render_for_completion,
)
from nanochat.core.data import Conversation
from nanochat.core.engine import Completion
from nanochat.core.progress import Progress
from nanochat.core.special_tokens import ASSISTANT_END
from nanochat_stages.chat_batches import pad_rows


def held_out(dataset: Any, count: int, rank: int = 0, world_size: int = 1) -> list[Conversation]:
    """This rank's share of the first ``count`` held-out conversations (fixed seeded order)."""
    per_rank = max(1, count // world_size)
    out: list[Conversation] = []
    for item, _ in dataset.iter("val", rank=rank, world_size=world_size, seed=0):
        out.append(item)
        if len(out) >= per_rank:
            break
    return out


def one_per_part(dataset: Any) -> list[Conversation]:
    """The first held-out conversation of each dataset of a mixture (of the dataset if single)."""
    from nanochat.core.data_refs import ProblemsAsChat

    parts = [d for d, _ in getattr(dataset, "parts", [(dataset, 1.0)])]
    views = [ProblemsAsChat(d) if d.kind == "problems" else d for d in parts]
    return [c for view in views for c in held_out(view, 1)]


def chat_eval_batches(
    conversations: list[Conversation], tokenizer: Any, seq_len: int, batch_size: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Padded ``(inputs, targets)`` batches of held-out conversations (cut to the context)."""
    pad_id = int(tokenizer.special_tokens[ASSISTANT_END])
    rendered = [render_conversation(tokenizer, c, max_tokens=seq_len + 1) for c in conversations]
    rendered = [r for r in rendered if any(r.mask[1:])]
    return [
        pad_rows([(r.ids, r.mask) for r in rendered[i : i + batch_size]], pad_id)
        for i in range(0, len(rendered), batch_size)
    ]


@torch.no_grad()
def evaluate_chat_loss(
    model: torch.nn.Module,
    batches: list[tuple[torch.Tensor, torch.Tensor]],
    runtime: Any,
    desc: str = "chat eval",
) -> float:
    """Mean cross-entropy (nats) per loss-carrying target, over every rank's batches."""
    sums = torch.zeros(2, dtype=torch.float32, device=runtime.device)
    with Progress(len(batches), desc, "batches", enabled=runtime.is_main) as bar:
        for inputs, targets in batches:
            inputs, targets = inputs.to(runtime.device), targets.to(runtime.device)
            with runtime.autocast():
                loss = model(inputs, targets, loss_reduction="sum")
            sums[0] += loss.float()
            sums[1] += (targets >= 0).sum()
            bar.update(1)
    runtime.all_reduce_sum(sums)
    return float(sums[0].item() / max(1.0, sums[1].item()))


def generate_reply(
    model: Any, tokenizer: Any, prompt: list[int], max_tokens: int, runtime: Any = None
) -> tuple[list[int], bool]:
    """Greedy reply to a rendered prompt, up to and including ``<|assistant_end|>``.

    Returns:
        ``(ids, ended)``: the generated ids and whether the turn ended with
        ``<|assistant_end|>`` within ``max_tokens``.
    """
    [[reply]] = greedy_replies(model, tokenizer, [prompt], max_tokens, runtime)
    end = int(tokenizer.special_tokens[ASSISTANT_END])
    return reply.tokens, bool(reply.tokens) and reply.tokens[-1] == end


def greedy_replies(
    model: Any,
    tokenizer: Any,
    prompts: list[list[int]],
    max_tokens: int,
    runtime: Any = None,
    max_len: int | None = None,
) -> list[list[Completion]]:
    """Greedy continuations of ``prompts``, batched through the engine."""
    from nanochat.core.engine import Engine, Request, SamplingParams

    if not prompts:
        return []
    autocast = runtime.autocast if runtime is not None else None
    engine = Engine(
        model, tokenizer, slots=min(8, len(prompts)), max_len=max_len, autocast=autocast
    )
    params = SamplingParams(max_tokens=max_tokens)
    return engine.complete([Request(p, params) for p in prompts])


def sample_answers(
    model: Any,
    tokenizer: Any,
    conversations: list[Conversation],
    seq_len: int,
    max_tokens: int,
    runtime: Any = None,
) -> list[str]:
    """Each question and the model's greedy answer, as text with special tokens shown (none
    when ``max_tokens`` is 0)."""
    if max_tokens < 1:
        return []
    prompts = []
    for conversation in conversations:
        try:
            prompts.append(render_for_completion(tokenizer, conversation, max_tokens=seq_len - 1))
        except ConversationTooLong:
            continue
    replies = greedy_replies(model, tokenizer, prompts, max_tokens, runtime, max_len=seq_len)
    return [
        tokenizer.decode(prompt[1:] + reply.tokens)
        for prompt, [reply] in zip(prompts, replies, strict=True)
    ]

"""The `midtrain` and `sft` stages: a base model learns the conversation format, then to chat.

Both continue from an earlier stage's newest checkpoint (``midtrain`` from ``pretrain``; ``sft``
from ``midtrain``, else ``pretrain``) through the shared :class:`~nanochat_stages.training.
TrainingLoop`, with fresh optimizers and a learning rate that decays to ``final_lr_frac`` (0).
``midtrain`` best-fit packs whole conversations into full rows (padding what no conversation
fits); ``sft`` trains on one conversation per row, padded. The loss is taken only where the
rendering mask is 1 (assistant text, tool calls, ``<|assistant_end|>``). Validation is the mean
loss on held-out conversations' assistant tokens; ``sft`` also measures the starting model
(``base_val_loss``) and samples greedy answers to held-out questions.
"""

from __future__ import annotations

import math
from typing import Any

from nanochat.core.errors import UsageError
from nanochat_stages.options import MidtrainOptions, SftOptions

SAMPLE_CONVERSATIONS = 3


class ChatRecipe:
    """The chat-specific parts of the training loop, for `midtrain` (packed) or `sft` (padded).

    Args:
        options: the stage's options.
        packed: best-fit pack conversations (midtrain) or pad one per row (sft).
        init_from: earlier stages to continue from, in order of preference.
    """

    def __init__(self, options: Any, packed: bool, init_from: tuple[str, ...]):
        self.o = options
        self.packed = packed
        self.init_from = init_from
        self.eval_at_start = True

    def _dataset(self, loop: Any, ref: str) -> Any:

        return loop.ctx.open_dataset(ref, kind="chat")

    def total_steps(self, loop: Any, num_params: int, total_batch: int) -> int:
        """``max_steps``, else ``epochs`` passes over the mixture's train split.

        The split is streamed once, not listed; for packed rows only a sample of conversations
        is tokenized and the rest estimated from their length (see ``count_chat_tokens``).
        """
        if self.o.max_steps > 0:
            return int(self.o.max_steps)
        if self.o.epochs <= 0:
            raise UsageError(f"set {loop.ctx.stage_name}.max_steps or a positive epochs")
        from nanochat_stages.chat_batches import count_chat_tokens

        if self.packed:
            _, tokens = count_chat_tokens(self.dataset, loop.tokenizer, loop.seq_len + 1)
            return max(1, math.ceil(self.o.epochs * tokens / total_batch))
        conversations = sum(1 for _ in self.dataset.iter("train", shuffle=False))
        per_step = total_batch // loop.seq_len  # conversations per optimizer step
        return max(1, math.ceil(self.o.epochs * conversations / per_step))

    def open_source(self, loop: Any, state: dict[str, Any] | None) -> Any:
        """This rank's conversation batches, resumed from ``state`` when given."""
        from nanochat_stages.chat_batches import (
            ConversationStream,
            PackedChatBatches,
            PaddedChatBatches,
        )

        rt = loop.rt
        self.dataset = self._dataset(loop, self.o.mixture)
        stream = ConversationStream(
            self.dataset,
            loop.tokenizer,
            loop.seq_len + 1,
            overflow="truncate" if self.packed else self.o.overflow,
            rank=rt.rank,
            world_size=rt.world_size,
            seed=self.o.seed,
            state=state["stream"] if state else None,
        )
        if self.packed:
            rows, row_len = self.o.device_batch_size, loop.seq_len + 1
            return PackedChatBatches(stream, rows, row_len, self.o.doc_buffer, state)
        return PaddedChatBatches(stream, self.o.device_batch_size)

    def prepare_eval(self, loop: Any) -> None:
        """Held-out conversations (validation batches and sample questions)."""
        from nanochat_stages.chat_eval import chat_eval_batches, held_out, one_per_part

        rt = loop.rt
        val = self._dataset(loop, self.o.val_mixture) if self.o.val_mixture else self.dataset
        conversations = held_out(val, self.o.eval_conversations, rt.rank, rt.world_size)
        self.val_batches = chat_eval_batches(
            conversations, loop.tokenizer, loop.seq_len, self.o.device_batch_size
        )
        self.sample_conversations = one_per_part(val)[:SAMPLE_CONVERSATIONS]

    def evaluate(self, loop: Any) -> dict[str, float]:
        """Mean loss per held-out assistant token."""
        from nanochat_stages.chat_eval import evaluate_chat_loss

        return {"val_loss": evaluate_chat_loss(loop.model, self.val_batches, loop.rt)}

    def samples(self, loop: Any) -> list[str]:
        """Greedy answers to a few held-out questions."""
        from nanochat_stages.chat_eval import sample_answers

        return sample_answers(
            loop.model,
            loop.tokenizer,
            self.sample_conversations,
            loop.seq_len,
            self.o.sample_tokens,
            loop.rt,
        )


class MidtrainStage:
    """Continues the base model on a chat mixture, packed, loss on assistant tokens."""

    def __init__(self, options: MidtrainOptions):
        self.options = options

    def run(self, ctx: Any) -> dict[str, Any]:
        """Train (or resume) and return the summary."""
        from nanochat_stages.training import TrainingLoop

        recipe = ChatRecipe(self.options, packed=True, init_from=("pretrain",))
        return TrainingLoop(ctx, self.options, recipe).run()


class SftStage:
    """Fine-tunes the chat model on padded conversations, loss only where the mask is 1."""

    def __init__(self, options: SftOptions):
        self.options = options

    def run(self, ctx: Any) -> dict[str, Any]:
        """Train (or resume) and return the summary."""
        from nanochat_stages.training import TrainingLoop

        recipe = ChatRecipe(self.options, packed=False, init_from=("midtrain", "pretrain"))
        return TrainingLoop(ctx, self.options, recipe).run()

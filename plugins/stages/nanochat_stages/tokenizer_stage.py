"""The `tokenizer` stage: train the run's tokenizer on a text dataset, save it, measure it."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from typing import Any

from nanochat.core.data import DataError
from nanochat.core.progress import Progress
from nanochat.core.special_tokens import SPECIAL_TOKENS
from nanochat_stages.options import TokenizerStageOptions

logger = logging.getLogger(__name__)


def capped_texts(docs: Iterator[tuple[Any, Any]], max_chars: int, doc_cap: int) -> Iterator[str]:
    """Documents cut to ``doc_cap`` characters, until ``max_chars`` characters are given."""
    total = 0
    for doc, _cursor in docs:
        text = doc[:doc_cap]
        if not text:
            continue
        if total + len(text) > max_chars:
            text = text[: max_chars - total]
        total += len(text)
        yield text
        if total >= max_chars:
            return


def bytes_per_token(tokenizer: Any, texts: list[str]) -> tuple[float, int, int]:
    """``(bytes/token, bytes, tokens)`` of ``texts`` under ``tokenizer``.

    Raises:
        DataError: ``texts`` hold no tokens (there is nothing to measure).
    """
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts)) if texts else 0
    if n_tokens == 0:
        raise DataError("bytes per token of an empty validation split cannot be measured")
    return n_bytes / n_tokens, n_bytes, n_tokens


class TokenizerStage:
    """Trains the selected tokenizer plugin; rank 0 alone trains and writes."""

    def __init__(self, options: TokenizerStageOptions):
        self.options = options

    def _held_out(self, dataset: Any) -> list[str]:
        texts, total = [], 0
        for doc, _ in dataset.iter("val", shuffle=False):
            texts.append(doc[: self.options.doc_cap])
            total += len(texts[-1])
            if total >= self.options.eval_chars:
                break
        return texts

    def run(self, ctx: Any) -> dict[str, Any]:
        """Train, save into the run's tokenizer folder, log time and bytes per token."""
        runtime = ctx.runtime
        result: dict[str, Any] = {}
        if runtime.is_main:
            opts = self.options
            dataset = ctx.open_dataset(opts.dataset, kind="text")
            held_out = self._held_out(dataset)
            if not held_out:
                raise DataError(
                    f"{opts.dataset}: the validation split is empty, so bytes per token cannot "
                    "be measured; give the dataset held-out documents (e.g. a val_fraction "
                    "above 0)"
                )
            factory = ctx.tokenizer_factory()
            bars: list[Progress] = []  # made at the first report, after the options are checked

            def progress(done: int, total: int) -> None:
                if not bars:
                    bars.append(Progress(total, "tokenizer", "ids learned", owner=ctx.stage_name))
                if total != bars[0].total:
                    bars[0].set_total(total)
                bars[0].set_done(done)

            started = time.perf_counter()
            texts = capped_texts(
                dataset.iter("train", seed=opts.seed), opts.max_chars, opts.doc_cap
            )
            tokenizer = factory.train(texts, opts.vocab_size, list(SPECIAL_TOKENS), progress)
            train_seconds = time.perf_counter() - started
            for bar in bars:
                bar.close()
            ctx.save_tokenizer(tokenizer)
            bpt, n_bytes, n_tokens = bytes_per_token(tokenizer, held_out)
            result = {
                "implementation": (ctx.tokenizer_record() or {}).get("qualified_name"),
                "vocab_size": tokenizer.vocab_size,
                "train_seconds": round(train_seconds, 3),
                "bytes_per_token": round(bpt, 4),
                "eval_bytes": n_bytes,
                "eval_tokens": n_tokens,
            }
            if tokenizer.vocab_size < opts.vocab_size:
                result["vocab_size_requested"] = opts.vocab_size
                logger.warning(
                    "the tokenizer reached only %d of the %d ids asked for: the training text "
                    "has too few distinct pieces (give more text: -o tokenizer.max_chars=..., "
                    "or ask for fewer ids: -o tokenizer.vocab_size=...)",
                    tokenizer.vocab_size,
                    opts.vocab_size,
                )
        runtime.barrier()
        return result

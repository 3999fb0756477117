"""The `tokenizer` stage: train the run's tokenizer on a text dataset, save it, measure it."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from nanochat.core.data_refs import open_dataset
from nanochat.core.special_tokens import SPECIAL_TOKENS
from nanochat_stages.options import TokenizerStageOptions


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
    """``(bytes/token, bytes, tokens)`` of ``texts`` under ``tokenizer``."""
    if not texts:
        return 0.0, 0, 0
    n_bytes = sum(len(t.encode("utf-8")) for t in texts)
    n_tokens = sum(len(ids) for ids in tokenizer.encode_batch(texts))
    return (n_bytes / n_tokens if n_tokens else 0.0), n_bytes, n_tokens


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
        from tqdm import tqdm

        runtime = ctx.runtime
        result: dict[str, Any] = {}
        if runtime.is_main:
            opts = self.options
            dataset = open_dataset(opts.dataset, ctx.registry, kind="text")
            factory = ctx.tokenizer_factory()
            bars: list[Any] = []  # the progress bar, made at the first report (not before
            # the options are checked, so that a bad option prints its error line alone)

            def progress(done: int, total: int) -> None:
                if not bars:
                    bars.append(
                        tqdm(total=total, desc="tokenizer merges", unit="merge", dynamic_ncols=True)
                    )
                bar = bars[0]
                bar.total = total
                bar.n = done
                bar.refresh()

            started = time.perf_counter()
            texts = capped_texts(
                dataset.iter("train", seed=opts.seed), opts.max_chars, opts.doc_cap
            )
            tokenizer = factory.train(texts, opts.vocab_size, list(SPECIAL_TOKENS), progress)
            train_seconds = time.perf_counter() - started
            for bar in bars:
                bar.close()
            tokenizer.save(ctx.tokenizer_dir)
            bpt, n_bytes, n_tokens = bytes_per_token(tokenizer, self._held_out(dataset))
            result = {
                "implementation": ctx.plan.tokenizer.qualified_name,
                "vocab_size": tokenizer.vocab_size,
                "train_seconds": round(train_seconds, 3),
                "bytes_per_token": round(bpt, 4),
                "eval_bytes": n_bytes,
                "eval_tokens": n_tokens,
            }
            ctx.log(**result)
        runtime.barrier()
        return result

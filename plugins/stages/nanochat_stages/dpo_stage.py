"""The `dpo` stage: Direct Preference Optimisation against the frozen starting checkpoint.

It continues from the run's newest chat checkpoint (``-o dpo.source=sft`` picks one); that same
checkpoint, frozen, is the reference, and the checkpoints of `dpo` record which one it was, so
a resume compares against the same reference. Each micro-batch holds ``device_batch_size``
pairs as ``2 x device_batch_size`` padded rows (chosen, then rejected); one forward of the
policy and one without gradient of the reference give each reply's summed log-probability over
its own tokens, and :func:`~nanochat_stages.dpo_loss.dpo_terms` the DPO loss; each pair adds
``nll_coef`` times the chosen reply's mean negative log-likelihood per token (see
:func:`pair_sums`). The step's loss is the mean over its pairs, over all ranks.

The pairs come from a ``preferences`` dataset, or on-policy from a ``problems`` dataset (see
:mod:`nanochat_stages.dpo_data`); the on-policy pairs are sampled once, before the first step,
each rank sampling its share of the prompts, and saved in the stage's folder as ``pairs.jsonl``,
which a resume reads back. Everything else - optimizers, schedule, DDP, checkpoints holding
every rank's data position and the RNG, exact resume - is the shared
:class:`~nanochat_stages.training.TrainingLoop`.

Metrics per step: ``loss`` (= ``dpo_loss`` + ``nll_coef`` x ``chosen_nll``),
``reward_accuracy`` (share of pairs whose chosen reply has the higher implicit reward),
``reward_margin``, ``chosen_reward``/``rejected_reward`` and the policy's
``chosen_logp``/``rejected_logp`` (per pair, summed over the reply). Validation: the
same on held-out pairs of a preferences dataset, and greedy pass@1 on held-out problems of a
problems dataset (``base_`` values are the starting model's).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from nanochat.core.checkpoint import Checkpoint
from nanochat.core.data import DataError, Problem, take
from nanochat.core.engine import SamplingParams
from nanochat.core.errors import StageError, UsageError
from nanochat.core.progress import Progress
from nanochat_stages.dpo_data import (
    Pair,
    PairBatches,
    PairList,
    load_pairs,
    pairs_from_rollouts,
    render_pair,
    save_pairs,
)
from nanochat_stages.dpo_loss import STATS, pair_sums, stat_means
from nanochat_stages.options import DpoOptions
from nanochat_stages.policy import load_tools, pad_id, pad_sequences, sample_rollouts
from nanochat_stages.training import (
    TrainingLoop,
    chat_checkpoint,
    gather_objects,
    no_sync_unless,
)

PAIRS_FILE = "pairs.jsonl"
SAMPLE_PROMPTS = 3  # greedy answers shown at the end
GENERATION_CHUNK = 32  # prompts per engine call (only the progress bar depends on it)


class DpoRecipe:
    """The DPO-specific parts of the loop: pairs, validation and samples."""

    def __init__(self, options: DpoOptions):
        self.o = options
        self.init_from: tuple[str, ...] = ()  # the start is DpoLoop._initial_checkpoint
        self.eval_at_start = True
        self.val_pairs: list[Pair] = []
        self.eval_set: list[tuple[int, Problem]] = []

    # --- data ------------------------------------------------------------------------------

    def total_steps(self, loop: Any, num_params: int, total_batch: int) -> int:
        """``max_steps``, else ``epochs`` passes over the pairs (``total_batch`` pairs a step)."""
        if self.o.max_steps > 0:
            return int(self.o.max_steps)
        if self.o.epochs <= 0:
            raise UsageError(f"set {loop.ctx.stage_name}.max_steps or a positive epochs")
        if isinstance(self.train, PairList):
            count = len(self.train.pairs)
        else:
            count = sum(1 for _ in self.train.iter("train", shuffle=False))
        return max(1, math.ceil(self.o.epochs * count / total_batch))

    def open_source(self, loop: Any, state: dict[str, Any] | None) -> PairBatches:
        """This rank's pair batches (on-policy pairs are sampled or read back first)."""
        self.data = loop.ctx.open_dataset(self.o.dataset)
        if self.data.kind == "problems":
            self.train: Any = PairList(self._onpolicy_pairs(loop, resuming=state is not None))
        elif self.data.kind == "preferences":
            self.train = self.data
        else:
            raise DataError(
                f"dpo needs a preferences or a problems dataset; {self.o.dataset} is "
                f"{self.data.kind}"
            )
        rt = loop.rt
        return PairBatches(
            self.train,
            loop.tokenizer,
            loop.seq_len + 1,
            self.o.device_batch_size,
            pad_id(loop.tokenizer),
            self.o.overflow,
            rank=rt.rank,
            world_size=rt.world_size,
            seed=self.o.seed,
            state=state,
        )

    def _problems(self, split: str, count: int, seed: int | None) -> list[Problem]:
        """The first ``count`` problems of ``split``, shuffled by ``seed`` (None: stored order)."""
        out: list[Problem] = []
        if count <= 0:
            return out
        for problem, _ in self.data.iter(split, seed=seed or 0, shuffle=seed is not None):
            out.append(problem)
            if len(out) >= count:
                break
        return out

    def _onpolicy_pairs(self, loop: Any, resuming: bool) -> list[Pair]:
        """Sample (or, on a resume, read back) the on-policy pairs; every rank gets all."""
        path = loop.ctx.stage_dir / PAIRS_FILE
        if resuming:
            return load_pairs(path)
        o, rt, ctx = self.o, loop.rt, loop.ctx
        problems = self._problems("train", o.prompts, o.seed)
        mine = list(range(rt.rank, len(problems), rt.world_size))
        params = SamplingParams(
            max_tokens=o.max_new_tokens, temperature=o.temperature, top_k=o.top_k or None
        )
        tools = load_tools(ctx.registry)
        began = time.perf_counter()
        pairs: list[Pair] = []
        counts = torch.zeros(3, device=rt.device)  # samples, correct samples, prompts with both
        desc = "dpo pairs"
        with Progress(len(problems), desc, "prompts", enabled=rt.is_main) as bar:
            for start in range(0, len(mine), GENERATION_CHUNK):
                chunk = mine[start : start + GENERATION_CHUNK]
                results = sample_rollouts(
                    loop.reference,
                    loop.tokenizer,
                    [problems[i] for i in chunk],
                    chunk,
                    o.samples,
                    params,
                    o.seed,
                    tools,
                    runtime=rt,
                    slots=o.sample_slots,
                )
                found = pairs_from_rollouts(results, o.pairs_per_prompt)
                pairs += found
                counts[0] += sum(len(r.rollouts) for r in results)
                counts[1] += sum(x.correct for r in results for x in r.rollouts)
                counts[2] += len({p.meta["index"] for p in found})
                bar.update(len(chunk) * rt.world_size)
        rt.all_reduce_sum(counts)
        every = sorted(
            (p for part in gather_objects(rt, pairs) for p in part),
            key=lambda p: p.meta["index"],  # one problem's pairs all come from one rank
        )
        samples, correct, both = (int(v) for v in counts.tolist())
        ctx.log(
            event="pairs",
            prompts=len(problems),
            samples=samples,
            sample_accuracy=correct / max(1, samples),
            prompts_with_both=both,
            pairs=len(every),
            seconds=round(time.perf_counter() - began, 2),
        )
        if not every:
            raise StageError(
                f"no pairs: none of {len(problems)} prompts had both a correct and a wrong "
                f"completion among {o.samples} samples ({correct} of {samples} correct); "
                "raise dpo.prompts, dpo.samples or dpo.temperature"
            )
        if rt.is_main:
            save_pairs(path, every, dict(enumerate(problems)), loop.tokenizer)
        rt.barrier()
        return every

    # --- validation ------------------------------------------------------------------------

    def prepare_eval(self, loop: Any) -> None:
        """Held-out pairs (preferences) or problems (problems), this rank's share."""
        rt, o = loop.rt, self.o
        if self.data.kind == "preferences" and o.eval_pairs > 0 and "val" in self.data.splits():
            share = max(1, o.eval_pairs // rt.world_size)
            for item, _ in self.data.iter("val", rank=rt.rank, world_size=rt.world_size):
                pair, _ = render_pair(loop.tokenizer, item, loop.seq_len + 1, o.overflow)
                if pair is not None:
                    self.val_pairs.append(pair)
                if len(self.val_pairs) >= share:
                    break
        if self.data.kind == "problems":
            problems = self._problems("val", o.eval_problems, None)  # the same as rl's
            self.eval_set = [(i, problems[i]) for i in range(rt.rank, len(problems), rt.world_size)]
            self.sample_prompts = [p.prompt for p in problems[:SAMPLE_PROMPTS]]
        else:
            split = "val" if "val" in self.data.splits() else "train"
            items = take(self.data.iter(split), SAMPLE_PROMPTS)
            self.sample_prompts = [item.prompt for item in items]

    @torch.no_grad()
    def evaluate(self, loop: Any) -> dict[str, float]:
        """DPO metrics on held-out pairs and greedy pass@1 on held-out problems."""
        rt, out = loop.rt, {}
        if self.val_pairs:
            sums = torch.zeros(len(STATS) + 1, device=rt.device)
            rows = self.o.device_batch_size
            for i in range(0, len(self.val_pairs), rows):
                pairs = self.val_pairs[i : i + rows]
                sides = [p.chosen for p in pairs] + [p.rejected for p in pairs]
                batch = pad_sequences(sides, pad_id(loop.tokenizer)).to(rt.device)
                with rt.autocast():
                    _, stats = pair_sums(
                        loop.model,
                        loop.reference,
                        batch.inputs,
                        batch.targets,
                        self.o.beta,
                        self.o.nll_coef,
                    )
                sums[:-1] += stats
                sums[-1] += len(pairs)
            rt.all_reduce_sum(sums)
            out.update({f"val_{k}": v for k, v in stat_means(sums[:-1], sums[-1].item()).items()})
        if self.eval_set:
            out.update(self._pass_at_1(loop))
        return out

    def _pass_at_1(self, loop: Any) -> dict[str, float]:
        rt, o = loop.rt, self.o
        results = sample_rollouts(
            loop.model,
            loop.tokenizer,
            [p for _, p in self.eval_set],
            [i for i, _ in self.eval_set],
            1,
            SamplingParams(max_tokens=o.max_new_tokens, temperature=0.0),
            0,
            load_tools(loop.ctx.registry),
            runtime=rt,
            slots=o.sample_slots,
        )
        counts = torch.tensor(
            [sum(r.solved for r in results), len(results)], dtype=torch.float64, device=rt.device
        )
        rt.all_reduce_sum(counts)
        solved, n = counts.tolist()
        p = solved / max(1.0, n)
        stderr = math.sqrt(p * (1 - p) / max(1.0, n))
        return {"pass@1": p, "pass@1_stderr": stderr, "eval_problems": n}

    def samples(self, loop: Any) -> list[str]:
        """Greedy answers to a few prompts."""
        from nanochat_stages.chat_eval import sample_answers

        return sample_answers(
            loop.model,
            loop.tokenizer,
            self.sample_prompts,
            loop.seq_len,
            self.o.sample_tokens,
            loop.rt,
        )


class DpoLoop(TrainingLoop):
    """The shared training loop with a frozen reference model and the DPO micro-step."""

    recipe: DpoRecipe

    def _initial_checkpoint(self) -> Checkpoint | None:
        """A fresh start continues from a chat model (``source``, else the newest)."""
        return chat_checkpoint(self.ctx, self.o.source)

    def _build(self) -> None:
        self._batch()
        super()._build()
        self.batch_unit = "pairs"
        if self.latest is not None:
            recorded = self.latest.meta.get("reference")
            if not isinstance(recorded, dict):
                raise StageError(
                    f"checkpoint {self.latest.path} does not record its reference model; "
                    f"delete {self.ctx.stage_dir} to start {self.ctx.stage_name} over"
                )
            reference = self._reference_checkpoint(recorded["stage"], int(recorded["step"]))
        else:
            assert self.init_source is not None  # dpo always continues from a checkpoint
            reference = self.init_source
        self.extra_meta["reference"] = {
            "stage": reference.path.parent.parent.name,
            "step": reference.step,
        }
        model = self.ctx.load_model(reference).to(self.rt.device)
        model.eval()
        model.requires_grad_(False)
        self.reference = model

    def _reference_checkpoint(self, stage: str, step: int) -> Checkpoint:
        manager = self.ctx.stage_checkpoints(stage)
        if step not in manager.steps():
            raise StageError(
                f"{self.ctx.stage_name} cannot resume: its reference model {stage}/"
                f"step_{step:08d} is gone; delete {self.ctx.stage_dir} to start it over"
            )
        return manager.load(step)

    def _batch(self) -> tuple[int, int]:
        """``(micro-steps per step, pairs per step)``, checked before any work is done."""
        o, name = self.o, self.ctx.stage_name
        if o.total_batch_tokens:
            raise UsageError(f"{name} counts its batch in pairs: use {name}.total_batch_pairs")
        micro = o.device_batch_size * self.rt.world_size
        total = o.total_batch_pairs or micro
        if total % micro:
            raise UsageError(
                f"{name}.total_batch_pairs={total} must be a multiple of device_batch_size x "
                f"world_size = {micro}"
            )
        return total // micro, total

    def _plan(self) -> tuple[int, int, int]:
        """``(micro-steps per step, pairs per step, total steps)``."""
        accum, total = self._batch()
        num_params = sum(p.numel() for p in self.model.parameters())
        return accum, total, self.recipe.total_steps(self, num_params, total)

    def _micro_steps(self, accum: int) -> tuple[float, int, int]:
        """DPO forward/backward over ``accum`` micro-batches: ``(mean loss, tokens, loss
        tokens)``; the step's mean metrics land in :attr:`step_stats`."""
        rt, rows = self.rt, self.o.device_batch_size
        sums = torch.zeros(len(STATS) + 3, device=rt.device)
        for micro in range(accum):
            inputs, targets = self.source.next_batch()
            inputs = inputs.to(rt.device, non_blocking=True)
            targets = targets.to(rt.device, non_blocking=True)
            with no_sync_unless(self.train_model, micro == accum - 1), rt.autocast():
                loss_sum, stats = pair_sums(
                    self.train_model, self.reference, inputs, targets, self.o.beta, self.o.nll_coef
                )
                (loss_sum / (rows * accum)).backward()
            sums[: len(STATS)] += stats
            sums[-3] += rows
            sums[-2] += targets.numel()
            sums[-1] += (targets >= 0).sum()
        rt.all_reduce_sum(sums)
        pairs, tokens, loss_tokens = (float(v) for v in sums[-3:].tolist())
        means = stat_means(sums[: len(STATS)], pairs)
        loss = means.pop("loss")
        self.step_stats = means
        return loss, int(tokens), int(loss_tokens)


class DpoStage:
    """Direct Preference Optimisation of the run's chat model against its frozen start."""

    def __init__(self, options: DpoOptions):
        self.options = options

    def run(self, ctx: Any) -> dict[str, Any]:
        """Train (or resume) and return the summary."""
        return DpoLoop(ctx, self.options, DpoRecipe(self.options)).run()

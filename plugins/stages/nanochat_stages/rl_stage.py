"""The `rl` stage: on-policy policy gradient of the GRPO family on a ``problems`` dataset.

Per step: ``prompts_per_step`` problems (the same seeded order on every rank; each rank takes
its share), ``samples`` completions of each from the engine (one shared prefill per problem,
the calculator on), rewards from the dataset, group-relative advantages and the token-level
loss of :mod:`nanochat_stages.rl_objective` on the model's own sampled tokens only. With
``clip_ratio`` / ``updates_per_batch`` the batch is reused PPO-style; ``kl_coef`` adds a KL
penalty to the starting policy. Held-out pass@1 is measured at the start, every
``eval_every`` steps and at the end. Checkpoints hold the weights, the optimizers, the position
in the problem order and the RNG; a re-run resumes exactly (samples are seeded by the
problems' global indices, not by time or rank).

The stage continues from the newest chat checkpoint of the run, or from ``-o rl.source=STAGE``.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import torch

from nanochat.core.checkpoint import Checkpoint, CheckpointManager
from nanochat.core.data import DataError, Problem, take
from nanochat.core.engine import SamplingParams
from nanochat.core.errors import CheckpointError, StageError
from nanochat.core.progress import Progress
from nanochat.core.rollouts import ProblemRollouts
from nanochat_stages.options import RlOptions
from nanochat_stages.policy import (
    load_tools,
    pad_id,
    pad_sequences,
    rollout_sequence,
    sample_rollouts,
    token_logprobs,
)
from nanochat_stages.rl_objective import group_advantages, policy_loss
from nanochat_stages.schedule import budget_step, lr_multiplier
from nanochat_stages.training import (
    TrainingLoop,
    chat_checkpoint,
    check_loss,
    no_sync_unless,
    set_learning_rates,
)

logger = logging.getLogger(__name__)

START_KEY = "rl_start"  # checkpoint meta: which checkpoint the stage started from (``stage/step``)
EVAL_SEED_OFFSET = 1 << 31


class ProblemStream:
    """Problems of a split in a seeded order, epoch after epoch (a new order each epoch).

    Every rank reads the whole order, so the global batch does not depend on the world size.

    Args:
        dataset: a ``problems`` dataset.
        split: the split to read.
        seed: the order's seed (epoch ``e`` shuffles with ``seed + e``).
        state: a :meth:`state` to resume from.
    """

    def __init__(self, dataset: Any, split: str, seed: int, state: dict[str, Any] | None):
        self.dataset, self.split, self.seed = dataset, split, seed
        self.epoch = int(state["epoch"]) if state else 0
        self.cursor = state["cursor"] if state else None
        self.taken = int(state["taken"]) if state else 0
        self._open()

    def _open(self) -> None:
        self._items = self.dataset.iter(self.split, seed=self.seed + self.epoch, cursor=self.cursor)

    def take(self, n: int) -> tuple[list[Problem], list[int]]:
        """The next ``n`` problems and their global indices."""
        problems: list[Problem] = []
        fresh_epoch = False
        while len(problems) < n:
            try:
                item, self.cursor = next(self._items)
            except StopIteration:
                if fresh_epoch:
                    raise DataError(f"{self.dataset.name} has no {self.split} problems") from None
                self.epoch, self.cursor, fresh_epoch = self.epoch + 1, None, True
                self._open()
                continue
            fresh_epoch = False
            problems.append(item)
        first = self.taken
        self.taken += n
        return problems, list(range(first, first + n))

    def state(self) -> dict[str, Any]:
        """The position after the last problem taken."""
        return {"epoch": self.epoch, "cursor": self.cursor, "taken": self.taken}

    def close(self) -> None:
        """Nothing runs in the background."""


class RlLoop(TrainingLoop):
    """The `rl` stage's loop: the model set-up, checkpoints and resume of :class:`TrainingLoop`
    with sampling, rewards and the policy loss in place of batches of text."""

    o: RlOptions

    def __init__(self, ctx: Any, options: RlOptions):
        super().__init__(ctx, options, recipe=self)  # type: ignore[arg-type]
        self.init_from: tuple[str, ...] = ()
        self.eval_at_start = True

    # --- where the weights come from ---------------------------------------------------------

    def _initial_checkpoint(self) -> Checkpoint | None:
        """A fresh start continues from a chat model (``source``, else the newest)."""
        return chat_checkpoint(self.ctx, self.o.source)

    def _build(self) -> None:
        super()._build()
        if self.latest is not None:
            start_name = self.latest.meta.get(START_KEY)
        else:
            assert self.init_source is not None
            start_name = checkpoint_label(self.init_source)
        self.model_record[START_KEY] = start_name
        self.reference = self._reference(str(start_name)) if self.o.kl_coef > 0 else None

    def _reference(self, label: str) -> Any:
        """The frozen starting policy (for the KL penalty)."""
        stage, _, step = label.partition("/")
        manager = CheckpointManager(self.ctx.run_dir / stage / "checkpoints")
        try:
            checkpoint = manager.load(int(step.removeprefix("step_")))
        except (CheckpointError, ValueError):
            raise StageError(
                f"rl.kl_coef needs the starting checkpoint {label}, which is gone; set "
                "-o rl.kl_coef=0 or start rl over"
            ) from None
        reference = self.ctx.load_model(checkpoint).to(self.rt.device).eval()
        for p in reference.parameters():
            p.requires_grad_(False)
        return reference

    # --- data --------------------------------------------------------------------------------

    def open_source(self, loop: Any, state: dict[str, Any] | None) -> ProblemStream:
        """The training problems, resumed from ``state`` (the :class:`Recipe` hook)."""
        self.dataset = self.ctx.open_dataset(self.o.dataset, kind="problems")
        self.problem_stream = ProblemStream(self.dataset, "train", self.o.seed, state)
        return self.problem_stream

    def prepare_eval(self, loop: Any) -> None:
        """This rank's share of the first ``eval_problems`` held-out problems."""
        rt = self.rt
        held = take(self.dataset.iter(self.o.eval_split, shuffle=False), self.o.eval_problems)
        if not held:
            raise DataError(f"{self.o.dataset} has no {self.o.eval_split} problems to evaluate")
        self.eval_indices = list(range(len(held)))[rt.rank :: rt.world_size]
        self.eval_set = [held[i] for i in self.eval_indices]
        self.eval_total = len(held)
        self.tools = load_tools(self.ctx.registry)

    def total_steps(self, loop: Any, num_params: int, total_batch: int) -> int:
        """``max_steps``, else ``epochs`` passes over the train split."""
        if self.o.max_steps > 0:
            return int(self.o.max_steps)
        if self.o.epochs <= 0:
            raise StageError("set rl.max_steps or a positive rl.epochs")
        count = sum(1 for _ in self.dataset.iter("train", shuffle=False))
        return max(1, math.ceil(self.o.epochs * count / self.o.prompts_per_step))

    # --- evaluation --------------------------------------------------------------------------

    def evaluate(self, loop: Any) -> dict[str, float]:
        """Held-out pass@1 (one sample per problem at ``eval_temperature``), over all ranks."""
        o = self.o
        params = SamplingParams(max_tokens=o.max_new_tokens, temperature=o.eval_temperature)
        results = sample_rollouts(
            self.model,
            self.tokenizer,
            self.eval_set,
            self.eval_indices,
            1,
            params,
            (o.seed << 32) + EVAL_SEED_OFFSET,
            self.tools,
            self.rt,
            o.sample_slots,
            self.seq_len,
        )
        self.last_eval = results
        sums = torch.tensor([sum(r.solved for r in results), len(results)], dtype=torch.float64)
        sums = self.rt.all_reduce_sum(sums.to(self.rt.device)).cpu()
        p = float(sums[0] / sums[1])
        return {
            "pass@1": p,
            "pass@1_stderr": math.sqrt(p * (1 - p) / float(sums[1])),
            "eval_problems": float(sums[1]),
        }

    def samples(self, loop: Any) -> list[str]:
        """A few held-out problems with the answer the model gave at the last evaluation."""
        shown = getattr(self, "last_eval", [])[:3]
        return [
            f"{self.tokenizer.decode(r.prompt[1:])}{r.rollouts[0].text}  [reward "
            f"{r.rollouts[0].reward:g}, answer {r.problem.answer}]"
            for r in shown
        ]

    # --- one step ----------------------------------------------------------------------------

    def _sample(self, step: int) -> list[ProblemRollouts]:
        o, rt = self.o, self.rt
        problems, indices = self.problem_stream.take(o.prompts_per_step)
        share = o.prompts_per_step // rt.world_size
        mine = slice(rt.rank * share, (rt.rank + 1) * share)
        params = SamplingParams(
            max_tokens=o.max_new_tokens, temperature=o.temperature, top_k=o.top_k or None
        )
        return sample_rollouts(
            self.model,
            self.tokenizer,
            problems[mine],
            indices[mine],
            o.samples,
            params,
            o.seed << 32,
            self.tools,
            rt,
            o.sample_slots,
            self.seq_len,
        )

    def _micro_batches(self, groups: list[ProblemRollouts]) -> list[tuple[Any, torch.Tensor]]:
        """``(PolicyBatch, advantages)`` chunks of ``device_batch_size`` sequences."""
        rewards = torch.tensor([g.rewards for g in groups], dtype=torch.float32)
        advantages = group_advantages(rewards, self.o.std_normalize).reshape(-1)
        sequences = [rollout_sequence(g.prompt, r) for g in groups for r in g.rollouts]
        keep = [i for i, (ids, _) in enumerate(sequences) if len(ids) >= 2]
        chunks = []
        size, pad = self.o.device_batch_size, pad_id(self.tokenizer)
        for start in range(0, len(keep), size):
            rows = keep[start : start + size]
            batch = pad_sequences([sequences[i] for i in rows], pad).to(self.rt.device)
            chunks.append((batch, advantages[rows].to(self.rt.device)))
        if not chunks:  # one empty row, so that every rank runs the same collectives
            empty = pad_sequences([([pad, pad], [0, 0])], pad).to(self.rt.device)
            chunks.append((empty, torch.zeros(1, device=self.rt.device)))
        return chunks

    def _update(
        self, chunks: list[tuple[Any, torch.Tensor]], normaliser: float
    ) -> dict[str, float]:
        """``updates_per_batch`` optimizer steps on the batch; summed loss, KL and clipping."""
        o, rt = self.o, self.rt
        reuse = o.updates_per_batch > 1 or o.clip_ratio > 0
        old, ref = [], []
        with torch.no_grad(), rt.autocast():
            for batch, _ in chunks:
                args = (batch.inputs, batch.targets)
                old.append(token_logprobs(self.model, *args) if reuse else None)
                ref.append(token_logprobs(self.reference, *args) if self.reference else None)
        sums = torch.zeros(4, dtype=torch.float64, device=rt.device)  # loss, kl, clipped, norm
        for _ in range(o.updates_per_batch):
            for i, (batch, adv) in enumerate(chunks):
                with no_sync_unless(self.train_model, i == len(chunks) - 1), rt.autocast():
                    logp = token_logprobs(self.train_model, batch.inputs, batch.targets)
                    parts = policy_loss(
                        logp, adv, batch.mask, normaliser, old[i], ref[i], o.clip_ratio, o.kl_coef
                    )
                    # DDP averages gradients over ranks; the normaliser already counts them all
                    (parts.loss * rt.world_size).backward()
                sums[0] += parts.loss.detach()
                sums[1] += parts.kl_sum
                sums[2] += parts.clipped
            if o.grad_clip > 0:
                norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
                sums[3] += norm.detach().to(sums.dtype)
            for optimizer in self.optimizers:
                optimizer.step()
            self.model.zero_grad(set_to_none=True)
        rt.all_reduce_sum(sums[:3])
        updates, tokens = o.updates_per_batch, normaliser * o.updates_per_batch
        out = {"loss": float(sums[0]) / updates}
        if o.grad_clip > 0:
            out["grad_norm"] = float(sums[3]) / updates
        if o.kl_coef > 0:
            out["kl"] = float(sums[1]) / tokens
        if o.clip_ratio > 0:
            out["clip_frac"] = float(sums[2]) / tokens
        return out

    def _step_stats(self, groups: list[ProblemRollouts]) -> torch.Tensor:
        """Sums over this rank's samples: reward, sampled tokens, forced tokens, samples,
        groups without signal, groups, correct samples."""
        rollouts = [r for g in groups for r in g.rollouts]
        flat = [len(set(g.rewards)) <= 1 for g in groups]
        values = [
            sum(r.reward for r in rollouts),
            sum(r.sampled_tokens for r in rollouts),
            sum(len(r.forced) - r.sampled_tokens for r in rollouts),
            len(rollouts),
            sum(flat),
            len(groups),
            sum(r.correct for r in rollouts),
        ]
        return torch.tensor(values, dtype=torch.float64, device=self.rt.device)

    # --- the loop ----------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Train (or resume) and return the summary."""
        o, rt, ctx, name = self.o, self.rt, self.ctx, self.ctx.stage_name
        if o.prompts_per_step % rt.world_size:
            raise StageError(
                f"rl.prompts_per_step={o.prompts_per_step} must be a multiple of the "
                f"{rt.world_size} processes"
            )
        self._build()
        self._data()
        num_params = sum(p.numel() for p in self.model.parameters())
        total_steps = self.total_steps(self, num_params, 0)
        state = self.loop_state or {}
        start = int(state["step"]) + 1 if state else 0
        tokens_seen = int(state.get("tokens_seen", 0))
        metrics: dict[str, Any] = dict(state.get("metrics", {}))
        last_saved = None if self.latest is None else self.latest.step
        if start == 0:
            ctx.log(
                event="plan",
                params=num_params,
                steps=total_steps,
                prompts_per_step=o.prompts_per_step,
                samples=o.samples,
                eval_problems=self.eval_total,
            )
            if self.init_source is not None:
                ctx.log(event="init", source=self.model_record[START_KEY])
            base = {f"base_{k}": v for k, v in self._evaluate().items()}
            metrics.update(base)
            ctx.log(event="base_eval", **base)
        else:
            ctx.log(event="resume", step=start)
        bar = Progress(total_steps, name, "steps", initial=start, enabled=rt.is_main, owner=name)
        began = time.perf_counter()
        step = start - 1
        for step in range(start, total_steps):
            t0 = time.perf_counter()
            multiplier = lr_multiplier(
                budget_step(step, total_steps, t0 - began, o.time_budget_s),
                total_steps,
                o.warmup_ratio,
                o.warmdown_ratio,
                o.final_lr_frac,
            )
            set_learning_rates(self.optimizers, multiplier)
            groups = self._sample(step)
            t_sampled = time.perf_counter()
            stats = rt.all_reduce_sum(self._step_stats(groups)).tolist()
            normaliser = stats[1]
            chunks = self._micro_batches(groups)
            if normaliser > 0:
                update = self._update(chunks, normaliser)
                check_loss(update["loss"], step, math.inf, last_saved, name)
            else:
                update = {}
                logger.warning("rl step %d: no sampled tokens to learn from", step)
            rt.synchronize()
            dt = time.perf_counter() - t0
            tokens_seen += int(stats[1] + stats[2])
            record: dict[str, Any] = {
                "step": step,
                "reward": stats[0] / stats[3],
                "train_pass@1": stats[6] / stats[3],
                "sampled_tokens": stats[1] / stats[3],
                "forced_tokens": stats[2] / stats[3],
                "no_signal_frac": stats[4] / stats[5],
                **update,
                "lr_mult": multiplier,
                "sample_s": t_sampled - t0,
                "step_s": dt,
            }
            bar.update(1, reward=round(record["reward"], 3), len=round(record["sampled_tokens"], 1))
            last = step == total_steps - 1
            out_of_time = o.time_budget_s > 0 and time.perf_counter() - began >= o.time_budget_s
            ctx.log(**record)
            if (step + 1) % o.eval_every == 0 or last or out_of_time:
                evaluated = self._evaluate()
                metrics.update(evaluated)
                ctx.log(event="eval", step=step, **evaluated)
            if (step + 1) % o.checkpoint_every == 0 or last or out_of_time:
                self._save(step, metrics, tokens_seen)
                last_saved = step
            if out_of_time:
                break
        bar.close()
        samples = self._samples() if rt.is_main else []
        if rt.is_main:
            (ctx.stage_dir / "samples.txt").write_text("\n\n".join(samples) + "\n")
        return {
            "steps": step + 1,
            "tokens": tokens_seen,
            "params": num_params,
            **metrics,
            "seconds": round(time.perf_counter() - began, 2),
            "samples": samples,
        }


def checkpoint_label(checkpoint: Checkpoint) -> str:
    """``stage/step_N`` of a checkpoint."""
    return f"{checkpoint.path.parent.parent.name}/{checkpoint.path.name}"


class RlStage:
    """GRPO-style on-policy reinforcement learning on a problems dataset."""

    def __init__(self, options: RlOptions):
        self.options = options

    def run(self, ctx: Any) -> dict[str, Any]:
        """Train (or resume) and return the summary."""
        return RlLoop(ctx, self.options).run()

"""The training loop shared by `pretrain`, `midtrain` and `sft`.

A stage hands :class:`TrainingLoop` a :class:`Recipe`: where its weights start (from scratch, or
from the newest checkpoint of an earlier stage), the :class:`BatchSource` that yields
``(inputs, targets)`` (targets ``-1`` where no loss is taken), how many steps to run, and how to
evaluate and sample. The loop owns everything else: Muon + AdamW from the model factory, gradient
accumulation, DDP, the learning-rate schedule, the loss guard, checkpoints holding every rank's
data position and the RNG, and exact resume from the stage's own newest checkpoint.
"""

from __future__ import annotations

import contextlib
import math
import time
from typing import Any, Protocol

import torch
import torch.distributed as dist

from nanochat.core.checkpoint import Checkpoint, CheckpointManager, rng_state, set_rng_state
from nanochat.core.components import RunContext
from nanochat.core.errors import CheckpointError, StageError, UsageError
from nanochat.core.hardware import device_peak_flops, raise_cpu_peak
from nanochat.core.hardware import mfu as model_flops_utilisation
from nanochat.core.models import Model, ModelFactory, OptimizerSettings
from nanochat.core.progress import Progress
from nanochat.core.runtime import seed_everything
from nanochat_stages.resume_checks import (
    check_model_options,
    check_vocabulary,
    corrupt_checkpoint_message,
)
from nanochat_stages.schedule import lr_multiplier


class BatchSource(Protocol):
    """Endless micro-batches for one rank, with a position that can be saved and restored."""

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(inputs, targets)`` of shape ``(rows, T)`` on the CPU; targets ``-1`` = no loss."""
        ...

    def state(self) -> dict[str, Any]:
        """The position after the last batch (tensors and plain Python values only)."""
        ...

    def close(self) -> None:
        """Stop background work."""
        ...


class Recipe(Protocol):
    """What a stage plugs into the loop."""

    init_from: tuple[str, ...]  # earlier stages to continue from, in order; () = from scratch
    eval_at_start: bool  # evaluate the starting weights too (logged as ``base_<metric>``)

    def total_steps(self, loop: TrainingLoop, num_params: int, total_batch: int) -> int:
        """Optimizer steps of the whole stage."""
        ...

    def open_source(self, loop: TrainingLoop, state: dict[str, Any] | None) -> BatchSource:
        """This rank's batch source, resumed from ``state`` when given."""
        ...

    def prepare_eval(self, loop: TrainingLoop) -> None:
        """Build the fixed validation data (after the model and source exist)."""
        ...

    def evaluate(self, loop: TrainingLoop) -> dict[str, float]:
        """Validation metrics of ``loop.model`` (same on every rank)."""
        ...

    def samples(self, loop: TrainingLoop) -> list[str]:
        """A few generations to show how the model is doing (rank 0)."""
        ...


def check_loss(
    loss: float, step: int, limit: float, last_checkpoint: int | None, stage: str = "pretrain"
) -> None:
    """Stop with a clear message when the loss is NaN, infinite or above ``limit``."""
    if math.isfinite(loss) and loss <= limit:
        return
    kept = (
        f"the last good checkpoint (step {last_checkpoint}) is kept"
        if last_checkpoint is not None
        else "no checkpoint was written yet"
    )
    raise StageError(
        f"training diverged at step {step}: loss {loss}; {kept}. "
        f"Lower the learning rates (-o {stage}.matrix_lr=...) and run again"
    )


def no_sync_unless(model: Any, sync: bool) -> contextlib.AbstractContextManager[Any]:
    """DDP's ``no_sync`` for micro-steps that should not all-reduce yet."""
    if sync or not hasattr(model, "no_sync"):
        return contextlib.nullcontext()
    return model.no_sync()


def raise_cpu_peak_if_exceeded(peak: float, achieved_flops: float) -> float:
    """On CPU: the peak, raised to what one process just achieved if that was more."""
    return raise_cpu_peak(achieved_flops) if achieved_flops > peak else peak


BYTES_PER_PARAMETER = 16  # fp32 weight, gradient and two optimizer moments


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new model on ``device`` (None when unknown)."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def check_fits(factory: Any, config: dict[str, Any], device: torch.device, stage: str) -> None:
    """Refuse a model that cannot fit in memory before allocating it (an allocation that large
    can get the process killed instead of raising).

    Raises:
        StageError: the parameters, gradients and optimizer state need more than is free.
    """
    shell = factory.build(config, device="meta")
    needed = BYTES_PER_PARAMETER * sum(p.numel() for p in shell.parameters())
    free = available_memory(device)
    if free is not None and needed > free:
        raise StageError(
            f"the model of {stage} needs about {needed / 2**30:.1f} GiB to train but "
            f"{free / 2**30:.1f} GiB is free on {device} (lower -o model.depth / "
            "model.aspect_ratio)"
        )


def _same_model(now: dict[str, Any], saved: Any) -> bool:
    """Whether a checkpoint's model record names the run's model plugin (old ones name none)."""
    return not isinstance(saved, dict) or saved.get("qualified_name") == now["qualified_name"]


def gather_objects(runtime: Any, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a one-element list in a single process)."""
    if not runtime.distributed:
        return [obj]
    out: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(out, obj)
    return out


def set_learning_rates(optimizers: list[Any], multiplier: float) -> None:
    """Set every parameter group's ``lr`` to its ``initial_lr`` times ``multiplier``."""
    for optimizer in optimizers:
        for group in optimizer.param_groups:
            group["lr"] = group["initial_lr"] * multiplier


class TrainingLoop:
    """One training stage run inside a stage context.

    Args:
        ctx: the stage's run context.
        options: the stage's options (learning rates, batch sizes, schedule, eval cadence...).
        recipe: the stage-specific parts (see :class:`Recipe`).
    """

    def __init__(self, ctx: RunContext, options: Any, recipe: Recipe):
        self.ctx = ctx
        self.o = options
        self.recipe = recipe
        self.rt = ctx.runtime
        self.manager = CheckpointManager(
            ctx.stage_dir / "checkpoints", keep_last=max(1, options.keep_checkpoints)
        )
        self.batch_unit = "tokens"  # what ``total_batch`` of :meth:`_plan` counts
        self.extra_meta: dict[str, Any] = {}  # a subclass's additions to checkpoint metadata
        self.step_stats: dict[str, float] = {}  # a subclass's per-step metrics (see _micro_steps)

    def _starting_point(self) -> tuple[Checkpoint | None, bool]:
        """The checkpoint to start from and whether it is this stage's own (a resume)."""
        try:
            own = self.manager.latest()
        except CheckpointError as exc:
            raise StageError(corrupt_checkpoint_message(self.manager, exc)) from None
        if own is not None:
            return own, True
        return self._initial_checkpoint(), False

    def _initial_checkpoint(self) -> Checkpoint | None:
        """Where a fresh start begins: the newest checkpoint of the recipe's ``init_from``
        stages, else the run's newest model (e.g. one made by an ``import`` stage), else
        nothing (from scratch, for a recipe without ``init_from``)."""
        for stage in self.recipe.init_from:
            checkpoint = self.ctx.stage_checkpoints(stage).latest()
            if checkpoint is not None:
                return checkpoint
        if self.recipe.init_from:
            try:
                return self.ctx.newest_model_checkpoint("model")
            except StageError:
                pass
            names = " or ".join(f"`{s}`" for s in self.recipe.init_from)
            raise StageError(
                f"{self.ctx.stage_name} continues from {names}, but run "
                f"{self.ctx.run_name!r} has no checkpoint of it; run that stage first"
            )
        return None

    def _build(self) -> None:
        o, rt, ctx = self.o, self.rt, self.ctx
        seed_everything(o.seed)  # same initial weights on every rank
        self.tokenizer = ctx.load_tokenizer()
        start, resuming = self._starting_point()
        self.latest = start if resuming else None
        self.init_source = None if start is None or resuming else start
        factory = ctx.model_factory(start)
        if start is not None:
            check_vocabulary(start, self.tokenizer.vocab_size, ctx.run_name)
            if resuming and _same_model(ctx.model_record()["model"], start.meta.get("model")):
                config_now = factory.config(self.tokenizer.vocab_size)
                check_model_options(start, config_now, ctx.stage_name, ctx.stage_dir)
        try:
            self._load(factory, start)
        except (torch.OutOfMemoryError, RuntimeError) as exc:
            if not isinstance(exc, torch.OutOfMemoryError) and "allocate" not in str(exc):
                raise
            raise StageError(
                f"the model of {ctx.stage_name} does not fit in memory on {rt.device} "
                "(lower -o model.depth / model.aspect_ratio / model.sequence_len)"
            ) from None
        except CheckpointError as exc:
            if not resuming:
                raise
            raise StageError(corrupt_checkpoint_message(self.manager, exc)) from None
        self.train_model: Any = self.model
        if o.compile and rt.device_type == "cuda":
            self.train_model = torch.compile(self.model)
        if rt.distributed:
            device_ids = [rt.device.index] if rt.device_type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.train_model, device_ids=device_ids
            )

    def _load(self, factory: ModelFactory, start: Checkpoint | None) -> None:
        """The model (from ``start`` or new), its optimizers, and their state on a resume."""
        o, rt, ctx = self.o, self.rt, self.ctx
        if start is not None:
            model = ctx.load_model(start)
            self.config = start.meta["model_config"]
            self.model_record = {k: start.meta.get(k) for k in ("model", "tokenizer")}
        else:
            self.config = factory.config(self.tokenizer.vocab_size)
            check_fits(factory, self.config, rt.device, ctx.stage_name)
            model = factory.build(self.config)
            self.model_record = ctx.model_record()
        self.model_record["tokenizer_vocab_size"] = self.tokenizer.vocab_size
        model = model.to(rt.device)
        self.model: Model = model
        self.optimizers = factory.optimizers(
            model,
            OptimizerSettings(
                matrix_lr=o.matrix_lr,
                embedding_lr=o.embedding_lr,
                unembedding_lr=o.unembedding_lr,
                scalar_lr=o.scalar_lr,
                weight_decay=o.weight_decay,
                world_size=rt.world_size,
            ),
        )
        if self.latest is not None:
            saved = self.latest.optimizer_state()
            if saved is None:
                raise StageError(f"checkpoint {self.latest.path} has no optimizer state to resume")
            for optimizer, state in zip(self.optimizers, saved["optimizers"], strict=True):
                optimizer.load_state_dict(state)
            self.latest.loop_state()  # read now: a corrupt file is reported before training

    def _data(self) -> None:
        self.seq_len = int(self.model.sequence_len)
        loop_state = self.latest.loop_state() if self.latest is not None else None
        data_state = loop_state["data"][self.rt.rank] if loop_state else None
        self.source = self.recipe.open_source(self, data_state)
        if loop_state:
            set_rng_state(loop_state["rng"])
        self.loop_state = loop_state
        self.recipe.prepare_eval(self)

    def _save(self, step: int, metrics: dict[str, Any], tokens_seen: int) -> None:
        all_data = gather_objects(self.rt, self.source.state())
        if self.rt.is_main:
            self.manager.save(
                step,
                self.model.state_dict(),
                meta={
                    "model_config": self.config,
                    **self.model_record,
                    "stage": self.ctx.stage_name,
                    "tokens_seen": tokens_seen,
                    **self.extra_meta,
                    **metrics,
                },
                optimizer_state={"optimizers": [opt.state_dict() for opt in self.optimizers]},
                loop_state={
                    "step": step,
                    "data": all_data,
                    "rng": rng_state(),
                    "tokens_seen": tokens_seen,
                    "metrics": metrics,
                },
            )
        self.rt.barrier()

    def _evaluate(self) -> dict[str, float]:
        self.model.eval()
        metrics = self.recipe.evaluate(self)
        self.model.train()
        return metrics

    def _samples(self) -> list[str]:
        self.model.eval()
        out = self.recipe.samples(self)
        self.model.train()
        return out

    def _plan(self) -> tuple[int, int, int]:
        """``(micro-steps per step, tokens per step, total steps)``."""
        o = self.o
        micro_tokens = o.device_batch_size * self.seq_len * self.rt.world_size
        total_batch = o.total_batch_tokens or micro_tokens
        if total_batch % micro_tokens:
            raise UsageError(
                f"{self.ctx.stage_name}.total_batch_tokens={total_batch} must be a multiple of "
                f"device_batch_size x sequence_len x world_size = {micro_tokens}"
            )
        num_params = sum(p.numel() for p in self.model.parameters())
        total_steps = self.recipe.total_steps(self, num_params, total_batch)
        return total_batch // micro_tokens, total_batch, total_steps

    def _micro_steps(self, accum: int) -> tuple[float, int, int]:
        """Forward/backward ``accum`` micro-batches: ``(mean loss, tokens, loss tokens)``."""
        rt = self.rt
        sums = torch.zeros(3, device=rt.device)
        for micro in range(accum):
            inputs, targets = self.source.next_batch()
            inputs = inputs.to(rt.device, non_blocking=True)
            targets = targets.to(rt.device, non_blocking=True)
            with no_sync_unless(self.train_model, micro == accum - 1), rt.autocast():
                loss = self.train_model(inputs, targets)
                (loss / accum).backward()
            sums[0] += loss.detach() / accum
            sums[1] += targets.numel()
            sums[2] += (targets >= 0).sum()
        sums = rt.all_reduce_sum(sums)
        return sums[0].item() / rt.world_size, int(sums[1].item()), int(sums[2].item())

    def run(self) -> dict[str, Any]:
        """Train and return a summary (steps, tokens, validation metrics, samples)."""
        o, rt, ctx, name = self.o, self.rt, self.ctx, self.ctx.stage_name
        self._build()
        self._data()
        accum, total_batch, total_steps = self._plan()
        num_params = sum(p.numel() for p in self.model.parameters())
        flops_per_token = self.model.flops_per_token()
        peak, peak_source = device_peak_flops(rt)
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
                **{f"batch_{self.batch_unit}": total_batch},
                grad_accum=accum,
                flops_per_token=flops_per_token,
                peak_flops=peak,
                peak_source=peak_source,
            )
            if self.init_source is not None:
                source_stage = self.init_source.meta.get("stage", "?")
                ctx.log(event="init", source=source_stage, source_step=self.init_source.step)
            if getattr(self.recipe, "eval_at_start", False):
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
                step, total_steps, o.warmup_ratio, o.warmdown_ratio, o.final_lr_frac
            )
            set_learning_rates(self.optimizers, multiplier)
            loss_value, tokens, loss_tokens = self._micro_steps(accum)
            check_loss(loss_value, step, o.max_loss, last_saved, name)
            grad_norm = None
            if o.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
            for optimizer in self.optimizers:
                optimizer.step()
            self.model.zero_grad(set_to_none=True)
            rt.synchronize()
            dt = time.perf_counter() - t0
            tokens_seen += tokens
            tok_per_s = tokens / dt
            if rt.device_type == "cpu":
                peak = raise_cpu_peak_if_exceeded(peak, flops_per_token * tok_per_s / rt.world_size)
            mfu = model_flops_utilisation(flops_per_token, tok_per_s, peak, rt.world_size)
            bar.update(
                1, loss=round(loss_value, 4), tok_s=round(tok_per_s), mfu=f"{100 * mfu:.1f}%"
            )
            record: dict[str, Any] = {
                "step": step,
                "loss": loss_value,
                "lr_mult": multiplier,
                "tokens_per_s": tok_per_s,
                "mfu": mfu,
                "tokens": tokens_seen,
                "loss_tokens_frac": loss_tokens / max(1, tokens),
                **self.step_stats,
            }
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            eval_record: dict[str, Any] = {}
            last = step == total_steps - 1
            out_of_time = o.time_budget_s > 0 and time.perf_counter() - began >= o.time_budget_s
            if (step + 1) % max(1, o.eval_every) == 0 or last or out_of_time:
                evaluated = self._evaluate()
                metrics.update(evaluated)
                eval_record = {"event": "eval", "step": step, **evaluated}
            ctx.log(**record)
            if eval_record:
                ctx.log(**eval_record)
            if o.sample_every > 0 and (step + 1) % o.sample_every == 0 and rt.is_main:
                for text in self._samples():
                    ctx.log(event="sample", step=step, text=text)
            if (step + 1) % max(1, o.checkpoint_every) == 0 or last or out_of_time:
                self._save(step, metrics, tokens_seen)
                last_saved = step
            if out_of_time:
                break
        bar.close()
        self.source.close()
        samples = self._samples() if rt.is_main else []
        if rt.is_main:
            (ctx.stage_dir / "samples.txt").write_text("\n\n".join(samples) + "\n")
            for text in samples:
                ctx.log(event="sample", text=text)
        return {
            "steps": step + 1,
            "tokens": tokens_seen,
            "params": num_params,
            **metrics,
            **(self.source.stats() if hasattr(self.source, "stats") else {}),
            "seconds": round(time.perf_counter() - began, 2),
            "samples": samples,
        }


def chat_checkpoint(ctx: Any, source: str) -> Checkpoint:
    """The checkpoint a post-training stage (rl, dpo) starts from: stage ``source``'s newest (a
    name or unique prefix), or the run's newest chat checkpoint when ``source`` is empty.

    Raises:
        StageError: the run has no chat model yet (the message says what to run).
    """
    if source:
        return ctx.choose_checkpoint(source, "chat")
    try:
        return ctx.choose_checkpoint(None, "chat")
    except StageError:
        name = ctx.stage_name
        raise StageError(
            f"{name} continues from a chat model, but run {ctx.run_name!r} has none; run `sft` "
            f"(or another chat stage) first, or choose one with -o {name}.source=STAGE"
        ) from None

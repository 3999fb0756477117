"""The training loop of `pretrain`: packing, accumulation, schedule, eval, checkpoints, resume."""

from __future__ import annotations

import time
from typing import Any

import torch
import torch.distributed as dist
from tqdm import tqdm

from nanochat.core.checkpoint import CheckpointManager, rng_state, set_rng_state
from nanochat.core.data_refs import open_dataset
from nanochat.core.errors import UsageError
from nanochat.core.evaluation import evaluate_bpb, text_eval_batches
from nanochat.core.runtime import seed_everything
from nanochat_stages.options import PretrainOptions
from nanochat_stages.packing import BestFitPacker
from nanochat_stages.pretrain_stage import (
    SAMPLE_PROMPTS,
    check_loss,
    no_sync_unless,
    plan_steps,
)
from nanochat_stages.schedule import lr_multiplier
from nanochat_stages.token_stream import TokenStream


def peak_flops_per_second(runtime: Any) -> tuple[float, str]:
    """The accelerator's peak (table) or, on CPU, this machine's measured matmul throughput."""
    from nanochat.plugins.gpt.flops import measure_cpu_matmul_flops, peak_flops

    if runtime.device_type == "cuda":
        name = torch.cuda.get_device_name(runtime.device)
        peak = peak_flops(name)
        if peak:
            return peak, f"{name} bf16 table"
    return measure_cpu_matmul_flops(seconds=0.5), "measured CPU fp32 matmul"


def gather_objects(runtime: Any, obj: Any) -> list[Any]:
    """Every rank's ``obj`` (a one-element list in a single process)."""
    if not runtime.distributed:
        return [obj]
    out: list[Any] = [None] * runtime.world_size
    dist.all_gather_object(out, obj)
    return out


class TrainingLoop:
    """One pretraining run inside a stage context."""

    def __init__(self, ctx: Any, options: PretrainOptions):
        self.ctx = ctx
        self.o = options
        self.rt = ctx.runtime
        self.manager = CheckpointManager(
            ctx.stage_dir / "checkpoints", keep_last=max(1, options.keep_checkpoints)
        )

    def _build(self) -> None:
        o, rt, ctx = self.o, self.rt, self.ctx
        seed_everything(o.seed)  # same initial weights on every rank
        self.tokenizer = ctx.load_tokenizer()
        factory = ctx.model_factory()
        self.latest = self.manager.latest()
        self.config = (
            self.latest.meta["model_config"]
            if self.latest
            else factory.config(self.tokenizer.vocab_size)
        )
        model = factory.build(self.config).to(rt.device)
        if self.latest is not None:
            model.load_state_dict(self.latest.model_state())
        self.model = model
        self.optimizers = factory.optimizers(
            model,
            matrix_lr=o.matrix_lr,
            embedding_lr=o.embedding_lr,
            unembedding_lr=o.unembedding_lr,
            scalar_lr=o.scalar_lr,
            weight_decay=o.weight_decay,
            world_size=rt.world_size,
        )
        if self.latest is not None:
            states = self.latest.optimizer_state()["optimizers"]
            for optimizer, state in zip(self.optimizers, states, strict=True):
                optimizer.load_state_dict(state)
        self.train_model: Any = model
        if o.compile and rt.device_type == "cuda":
            self.train_model = torch.compile(model)
        if rt.distributed:
            device_ids = [rt.device.index] if rt.device_type == "cuda" else None
            self.train_model = torch.nn.parallel.DistributedDataParallel(
                self.train_model, device_ids=device_ids
            )

    def _data(self) -> None:
        o, rt = self.o, self.rt
        self.seq_len = int(self.config["sequence_len"])
        self.dataset = open_dataset(o.dataset, self.ctx.registry, kind="text")
        loop_state = self.latest.loop_state() if self.latest is not None else None
        data_state = loop_state["data"][rt.rank] if loop_state else None
        self.stream = TokenStream(
            self.dataset,
            self.tokenizer,
            "train",
            rt.rank,
            rt.world_size,
            seed=o.seed,
            state=data_state["stream"] if data_state else None,
            doc_cap=o.doc_cap,
        )
        self.packer = BestFitPacker(self.seq_len + 1, self.stream.next_doc, o.doc_buffer)
        if data_state:
            self.packer.load_state(data_state["packer"])
        if loop_state:
            set_rng_state(loop_state["rng"])
        self.loop_state = loop_state
        self.val_batches = text_eval_batches(
            self.dataset,
            self.tokenizer,
            self.seq_len,
            o.device_batch_size,
            o.eval_tokens,
            rt.device,
            "val",
            rt.rank,
            rt.world_size,
        )
        self.token_bytes = torch.tensor(
            self.tokenizer.token_bytes(), dtype=torch.long, device=rt.device
        )

    def _save(self, step: int, val_bpb: float | None, tokens_seen: int) -> None:
        buffer = [torch.from_numpy(doc) for doc in self.packer.state()["buffer"]]
        data = {"stream": self.stream.state(), "packer": {"buffer": buffer}}
        all_data = gather_objects(self.rt, data)
        if self.rt.is_main:
            self.manager.save(
                step,
                self.model.state_dict(),
                meta={
                    "model_config": self.config,
                    "stage": self.ctx.stage_name,
                    "val_bpb": val_bpb,
                    "tokens_seen": tokens_seen,
                },
                optimizer_state={"optimizers": [opt.state_dict() for opt in self.optimizers]},
                loop_state={
                    "step": step,
                    "data": all_data,
                    "rng": rng_state(),
                    "tokens_seen": tokens_seen,
                    "val_bpb": val_bpb,
                },
            )
        self.rt.barrier()

    def _evaluate(self) -> float:
        self.model.eval()
        bpb = evaluate_bpb(self.model, self.val_batches, self.token_bytes, self.rt)
        self.model.train()
        return bpb

    def _samples(self) -> list[str]:
        self.model.eval()
        out = []
        for prompt in SAMPLE_PROMPTS:
            ids = [self.tokenizer.special_tokens["<|bos|>"], *self.tokenizer.encode(prompt)]
            with self.rt.autocast():
                new = list(self.model.generate(ids, self.o.sample_tokens))
            out.append(prompt + self.tokenizer.decode(new))
        self.model.train()
        return out

    def run(self) -> dict[str, Any]:
        """Train and return a summary (steps, tokens, final validation bits per byte, samples)."""
        o, rt, ctx = self.o, self.rt, self.ctx
        self._build()
        self._data()
        rows, world = o.device_batch_size, rt.world_size
        micro_tokens = rows * self.seq_len * world
        total_batch = o.total_batch_tokens or micro_tokens
        if total_batch % micro_tokens:
            raise UsageError(
                f"pretrain.total_batch_tokens={total_batch} must be a multiple of "
                f"device_batch_size x sequence_len x world_size = {micro_tokens}"
            )
        accum = total_batch // micro_tokens
        num_params = sum(p.numel() for p in self.model.parameters())
        total_steps = plan_steps(o, num_params, total_batch)
        flops_per_token = self.model.flops_per_token()
        peak, peak_source = peak_flops_per_second(rt)
        start = 0 if self.loop_state is None else int(self.loop_state["step"]) + 1
        tokens_seen = 0 if self.loop_state is None else int(self.loop_state["tokens_seen"])
        val_bpb = None if self.loop_state is None else self.loop_state.get("val_bpb")
        last_saved = None if self.latest is None else self.latest.step
        if start == 0:
            ctx.log(
                event="plan",
                params=num_params,
                steps=total_steps,
                batch_tokens=total_batch,
                grad_accum=accum,
                flops_per_token=flops_per_token,
                peak_flops=peak,
                peak_source=peak_source,
            )
        else:
            ctx.log(event="resume", step=start)
        bar = tqdm(
            total=total_steps,
            initial=start,
            desc="pretrain",
            unit="step",
            disable=not rt.is_main,
            dynamic_ncols=True,
        )
        began = time.perf_counter()
        step = start - 1
        for step in range(start, total_steps):
            t0 = time.perf_counter()
            multiplier = lr_multiplier(
                step, total_steps, o.warmup_ratio, o.warmdown_ratio, o.final_lr_frac
            )
            for optimizer in self.optimizers:
                for group in optimizer.param_groups:
                    group["lr"] = group["initial_lr"] * multiplier
            loss_sum = torch.zeros((), device=rt.device)
            for micro in range(accum):
                batch = torch.from_numpy(self.packer.next_batch(rows)).to(rt.device)
                inputs, targets = batch[:, :-1], batch[:, 1:]
                with no_sync_unless(self.train_model, micro == accum - 1), rt.autocast():
                    loss = self.train_model(inputs, targets)
                    (loss / accum).backward()
                loss_sum += loss.detach()
            loss_value = rt.all_reduce_sum(loss_sum / accum).item() / world
            check_loss(loss_value, step, o.max_loss, last_saved)
            grad_norm = None
            if o.grad_clip > 0:
                grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), o.grad_clip)
            for optimizer in self.optimizers:
                optimizer.step()
            self.model.zero_grad(set_to_none=True)
            rt.synchronize()
            dt = time.perf_counter() - t0
            tokens_seen += total_batch
            tok_per_s = total_batch / dt
            mfu = flops_per_token * tok_per_s / (peak * world) if peak else 0.0
            bar.set_postfix(
                loss=f"{loss_value:.3f}", tok_s=f"{tok_per_s:,.0f}", mfu=f"{100 * mfu:.1f}%"
            )
            bar.update(1)
            record: dict[str, Any] = {
                "step": step,
                "loss": loss_value,
                "lr_mult": multiplier,
                "tokens_per_s": tok_per_s,
                "mfu": mfu,
                "tokens": tokens_seen,
            }
            if grad_norm is not None:
                record["grad_norm"] = float(grad_norm)
            last = step == total_steps - 1
            out_of_time = o.time_budget_s > 0 and time.perf_counter() - began >= o.time_budget_s
            if (step + 1) % max(1, o.eval_every) == 0 or last or out_of_time:
                val_bpb = self._evaluate()
                record["val_bpb"] = val_bpb
            ctx.log(**record)
            if o.sample_every > 0 and (step + 1) % o.sample_every == 0 and rt.is_main:
                for text in self._samples():
                    ctx.log(event="sample", step=step, text=text)
            if (step + 1) % max(1, o.checkpoint_every) == 0 or last or out_of_time:
                self._save(step, val_bpb, tokens_seen)
                last_saved = step
            if out_of_time:
                break
        bar.close()
        self.stream.close()
        samples = self._samples() if rt.is_main else []
        if rt.is_main:
            (ctx.stage_dir / "samples.txt").write_text("\n\n".join(samples) + "\n")
            for text in samples:
                ctx.log(event="sample", text=text)
        return {
            "steps": step + 1,
            "tokens": tokens_seen,
            "params": num_params,
            "val_bpb": val_bpb,
            "seconds": round(time.perf_counter() - began, 2),
            "samples": samples,
        }

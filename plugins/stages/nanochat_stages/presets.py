"""Presets contributed by nanochat-stages: one CPU-sized run and the GPU speedrun shapes.

* ``tiny``: 2 CPU cores; depth 3 (~2.9M params), context 256, vocab 4,096, on demo-text
  (offline); tokenizer + pretrain in a few minutes, then `midtrain` (30 packed steps) and `sft`
  (250 padded steps, mostly `arithmetic`) on the offline chat mixtures, and `rl` on
  `arithmetic` (at most 8 minutes of training).
* ``d12``: 1-8 GPUs; depth 12 (~185M params), context 2,048, vocab 65,536, on FineWeb-Edu;
  ~3.7B tokens (20 x params), ~1 h on 8 x H100.
* ``d20``: 8 x H100; depth 20 (~560M params); ~11B tokens, ~4 h (nanochat's $100 speedrun).
* ``d26``: 8 x H100; depth 26 (~1.1B params); ~22B tokens, ~12 h.

GPU times are estimates from the tokens each preset trains on and the throughput of the d20
speedrun shape; the `tiny` figure is measured by the test suite on this project's 2-core CI.

Each preset also carries its speedrun pipeline (``nanochat speedrun --preset NAME --print``):
tokenizer, pretrain, eval:bpb, midtrain, eval:gsm8k, sft, eval:gsm8k, rl, eval:gsm8k; the GPU
ones start with ``download-fineweb`` and evaluate/train on GSM8K, `tiny` on `arithmetic`.
"""

from __future__ import annotations

from nanochat.core.components import Preset

# The speedrun: evaluations after pretraining (bits/byte) and after mid-training, SFT and RL
# (problem accuracy); the GPU pipelines start by downloading FineWeb.
CPU_PIPELINE = (
    "tokenizer",
    "pretrain",
    "eval:bpb",
    "midtrain",
    "eval:gsm8k",
    "sft",
    "eval:gsm8k",
    "rl",
    "eval:gsm8k",
)
GPU_PIPELINE = ("download-fineweb", *CPU_PIPELINE)

# Seconds per stage on 8 x H100 (for the speedrun's time-left estimate; the machine's own speed
# rescales them as stages finish). Pretraining scales with params x tokens from d20's ~3 h.
GPU_ESTIMATES: dict[str, dict[str, float]] = {
    name: {
        "download-fineweb": download,
        "tokenizer": 180,
        "pretrain": pretrain,
        "eval:bpb": 120,
        "midtrain": pretrain / 12,
        "eval:gsm8k": 600,
        "sft": pretrain / 20,
        "rl": 3600,
    }
    for name, download, pretrain in (("d12", 300, 1300), ("d20", 900, 10800), ("d26", 1800, 41000))
}

_GPU_COMMON = {
    "tokenizer.dataset": "fineweb",
    "tokenizer.vocab_size": 65536,
    "tokenizer.max_chars": 2_000_000_000,
    "model.sequence_len": 2048,
    # the recipe's shapes (~185M / 561M / 1.1B parameters and their token budgets): the value
    # embeddings and scalars of issue 19 were chosen on a CPU; at a 65k vocabulary the tables
    # alone would add 4 x 65,536 x width lookup parameters and double the 20-tokens-per-parameter
    # budget. Turn them on with -o model.value_embeds=4 -o model.layer_scalars=true.
    "model.value_embeds": 0,
    "model.layer_scalars": False,
    "pretrain.dataset": "fineweb",
    "pretrain.total_batch_tokens": 524288,
    "pretrain.data_param_ratio": 20.0,
    "pretrain.eval_every": 250,
    "pretrain.eval_tokens": 10 * 524288,
    "pretrain.sample_every": 2000,
    "pretrain.checkpoint_every": 1000,
    "pretrain.compile": True,
    "eval-gsm8k.dataset": "gsm8k",
    "rl.dataset": "gsm8k",
    "dpo.dataset": "gsm8k",
}


def presets() -> list[Preset]:
    """The built-in presets."""
    return [
        Preset(
            "tiny",
            "CPU-sized: depth 3, context 256, vocab 4,096 on demo-text (minutes on 2 cores)",
            overrides={
                "tokenizer.dataset": "demo-text",
                "tokenizer.vocab_size": 4096,
                "tokenizer.max_chars": 20_000_000,
                "model.depth": 3,
                "model.sequence_len": 256,
                "model.head_dim": 64,
                "pretrain.dataset": "demo-text",
                "pretrain.device_batch_size": 16,
                "pretrain.total_batch_tokens": 4096,
                "pretrain.max_steps": 200,
                "pretrain.warmdown_ratio": 0.3,
                "pretrain.eval_every": 50,
                "pretrain.eval_tokens": 16384,
                "pretrain.checkpoint_every": 25,
                "pretrain.sample_tokens": 24,
                "midtrain.device_batch_size": 16,
                "midtrain.total_batch_tokens": 4096,
                "midtrain.max_steps": 30,
                "midtrain.eval_every": 15,
                "midtrain.eval_conversations": 128,
                "midtrain.checkpoint_every": 10,
                # sft: mostly arithmetic (half of it bare questions such as "What is 12 * 7?",
                # which a quarter did not teach), 250 steps at full learning rate until the
                # last 20 %
                "arithmetic.bare_fraction": 0.5,
                "sft.mixture": "arithmetic:1,identity:4,demo-chat:0.2",
                "sft.device_batch_size": 8,
                "sft.max_steps": 250,
                "sft.warmdown_ratio": 0.2,
                "sft.eval_every": 50,
                "sft.eval_conversations": 128,
                "sft.checkpoint_every": 50,
                "eval-gsm8k.dataset": "arithmetic",
                "eval-gsm8k.limit": 128,
                "eval-gsm8k.max_new_tokens": 96,
                # rl on `arithmetic` with numbers up to 300 (sft saw up to 100 and solves those
                # ~95 % of the time, leaving rl nothing to learn; it copies three-digit numbers
                # wrongly, which rl fixes): short answers, the default learning rates held until
                # a short warmdown (3x the default made held-out pass@1 fall), samples at
                # temperature 0.7, at most 8 minutes of training (+ evals)
                "rl.dataset": "arithmetic",
                "rl.arithmetic.max_value": 300,
                "rl.prompts_per_step": 8,
                "rl.samples": 8,
                "rl.max_new_tokens": 96,
                "rl.temperature": 0.7,
                "rl.warmdown_ratio": 0.2,
                "rl.max_steps": 240,
                "rl.time_budget_s": 480.0,
                "rl.device_batch_size": 16,
                "rl.eval_every": 50,
                "rl.eval_problems": 200,
                "rl.checkpoint_every": 25,
                # dpo on `arithmetic` with numbers up to 300, like rl: 1,024 problems x 8 samples
                # at temperature 1.0, one correct answer against up to 4 wrong ones, greedy
                # pass@1 on the whole val split
                "dpo.dataset": "arithmetic",
                "dpo.arithmetic.max_value": 300,
                "dpo.prompts": 1024,
                "dpo.samples": 8,
                "dpo.temperature": 1.0,
                "dpo.pairs_per_prompt": 4,
                "dpo.max_new_tokens": 96,
                "dpo.device_batch_size": 8,
                # one pass with a strong NLL term at 3x the default learning rates: 63.8 % ->
                # 77.4 % from the sft model (from an rl model: 1x +1.0 points, 3x +4.2, 6x -0.6;
                # 2 passes at nll_coef 1 once took 39 % to 32 %; benchmarks/README.md)
                "dpo.epochs": 1.0,
                "dpo.nll_coef": 4.0,
                "dpo.matrix_lr": 0.006,
                "dpo.embedding_lr": 0.06,
                "dpo.unembedding_lr": 0.0012,
                "dpo.eval_problems": 500,
                "dpo.eval_every": 1000,
                "dpo.checkpoint_every": 20,
            },
            stages=CPU_PIPELINE,
            estimates={  # measured on the 2-core VM (speedrun of 2026-11-30: 13m49s)
                "tokenizer": 5,
                "pretrain": 190,
                "eval:bpb": 5,
                "midtrain": 35,
                "eval:gsm8k": 5,
                "sft": 70,
                "rl": 500,
            },
        ),
        Preset(
            "d12",
            "GPU: depth 12 on FineWeb-Edu (~185M params, ~1 h on 8 x H100)",
            overrides={
                **_GPU_COMMON,
                "model.depth": 12,
                "pretrain.device_batch_size": 32,
                "download-fineweb.num_shards": 80,
            },
            stages=GPU_PIPELINE,
            estimates=GPU_ESTIMATES["d12"],
        ),
        Preset(
            "d20",
            "GPU: depth 20 on FineWeb-Edu, nanochat's $100 speedrun shape (~4 h on 8 x H100)",
            overrides={
                **_GPU_COMMON,
                "model.depth": 20,
                "pretrain.device_batch_size": 32,
                "download-fineweb.num_shards": 240,
            },
            stages=GPU_PIPELINE,
            estimates=GPU_ESTIMATES["d20"],
        ),
        Preset(
            "d26",
            "GPU: depth 26 on FineWeb-Edu (~1.1B params, ~12 h on 8 x H100)",
            overrides={
                **_GPU_COMMON,
                "model.depth": 26,
                "pretrain.device_batch_size": 16,
                "download-fineweb.num_shards": 450,
            },
            stages=GPU_PIPELINE,
            estimates=GPU_ESTIMATES["d26"],
        ),
    ]

"""Run the real `tokenizer` and `pretrain` stages on a machine where nanochat is not installed.

GPU machines lent for measurements may have torch but no way to `pip install` this workspace;
this script puts the workspace on `sys.path`, registers the built-in plugin modules in code
(the same objects the entry points would load) and runs a pipeline, printing the pretrain
stage's throughput and MFU records::

    PYTHONPATH=. python3 benchmarks/gpu_pipeline.py --text corpus.txt --depth 12 --steps 30

On a normal install use `nanochat run tokenizer pretrain ...` instead.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for sub in ("", "plugins/stages", "plugins/datasets", "plugins/evals", "rustbpe/python"):
    sys.path.insert(0, str(ROOT / sub))

from nanochat.core.pipeline import run_pipeline  # noqa: E402
from nanochat.core.plan import plan_run  # noqa: E402
from nanochat.core.plugins import create_plugin_manager, load_module_plugin  # noqa: E402
from nanochat.core.registry import Registry  # noqa: E402

PLUGIN_MODULES = {
    "nanochat": "nanochat.plugins.builtin",
    "nanochat-stages": "nanochat_stages.plugin",
    "nanochat-datasets": "nanochat_datasets.plugin",
    "nanochat-evals": "nanochat_evals.plugin",
}


def main() -> None:
    """Parse arguments, run the pipeline, print a summary of the pretrain records."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--text", required=True, help="a .txt/.jsonl/.parquet file or folder of text")
    p.add_argument("--depth", type=int, default=12)
    p.add_argument("--seq", type=int, default=2048)
    p.add_argument("--batch", type=int, default=16, help="rows per device batch")
    p.add_argument("--vocab", type=int, default=32768)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--compile", action="store_true")
    args = p.parse_args()

    home = Path(tempfile.mkdtemp(prefix="nanochat-gpu-"))
    os.environ["NANOCHAT_HOME"] = str(home)
    registry = Registry(create_plugin_manager(), [])
    for name, module in PLUGIN_MODULES.items():
        registry.register(load_module_plugin(module), name)
    dataset = f"text-files:{args.text}"
    overrides = [
        f"tokenizer.dataset={dataset}",
        f"tokenizer.vocab_size={args.vocab}",
        f"model.depth={args.depth}",
        f"model.sequence_len={args.seq}",
        f"pretrain.dataset={dataset}",
        f"pretrain.device_batch_size={args.batch}",
        f"pretrain.max_steps={args.steps}",
        "pretrain.eval_every=1000",
        f"pretrain.eval_tokens={args.seq * args.batch}",
        "pretrain.checkpoint_every=1000",
        f"pretrain.compile={args.compile}",
        "pretrain.sample_tokens=16",
    ]
    plan = plan_run(registry, ["tokenizer", "pretrain"], "gpu", overrides=overrides)
    started = time.perf_counter()
    results = run_pipeline(plan, registry)
    wall = time.perf_counter() - started
    records = [
        json.loads(line)
        for line in (home / "runs/gpu/metrics.jsonl").read_text().split("\n")
        if line.strip()
    ]
    steps = [r for r in records if r.get("stage") == "pretrain" and "mfu" in r]
    steady = steps[len(steps) // 3 :] or steps
    summary = {
        "wall_s": round(wall, 1),
        "tokenizer": {k: results["tokenizer"].get(k) for k in ("train_seconds", "bytes_per_token")},
        "steps": len(steps),
        "median_tokens_per_s": statistics.median(r["tokens_per_s"] for r in steady),
        "median_mfu": statistics.median(r["mfu"] for r in steady),
        "first_loss": steps[0]["loss"] if steps else None,
        "last_loss": steps[-1]["loss"] if steps else None,
        "val_bpb": results["pretrain"].get("val_bpb"),
        "plan": next((r for r in records if r.get("event") == "plan"), None),
    }
    print(json.dumps(summary, indent=2, default=str))


if __name__ == "__main__":
    main()

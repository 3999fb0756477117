"""Worker of test_gpt_model's DDP test: Muon + AdamW under DDP (gloo, CPU) vs one process.

Run with ``torchrun --nproc_per_node=2 muon_ddp.py OUT.json``. Every rank trains a copy of the
same tiny GPT (value embeddings and layer scalars on, three blocks so that one matrix shape does
not split evenly over two ranks) on its half of a fixed global batch, twice: with Muon sharded
over the ranks (``world_size`` 2, the stages' setting) and unsharded (``world_size`` 1: every
rank orthogonalises every matrix). Rank 0 then trains a fresh copy on the whole batch in one
process and writes the parameter differences to ``OUT.json``.
"""

from __future__ import annotations

import json
import sys

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP

from nanochat.core.models import OptimizerSettings
from nanochat.plugins.gpt import muon
from nanochat.plugins.gpt.factory import GPTFactory
from nanochat.plugins.gpt.options import GPTOptions

STEPS = 5
BATCH, SEQ, VOCAB = 8, 16, 96


def make_model_and_data():
    """The same initial model and global batch on every rank (fixed seeds)."""
    options = GPTOptions(
        depth=3, aspect_ratio=32, head_dim=16, sequence_len=SEQ, value_embeds=1, layer_scalars=True
    )
    factory = GPTFactory(options)
    torch.manual_seed(0)
    model = factory.build(factory.config(VOCAB))
    with torch.no_grad():  # non-zero output projections, so every matrix gets a gradient
        for p in model.parameters():
            if p.abs().sum() == 0:
                p.normal_(0.0, 0.02)
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, VOCAB, (STEPS, BATCH, SEQ + 1), generator=g)
    return factory, model, data


def train(factory, model, wrapped, data, rows, world_size=1):
    """Run STEPS optimisation steps on ``data[:, rows]``; return the losses."""
    settings = OptimizerSettings(
        matrix_lr=0.02, embedding_lr=0.1, unembedding_lr=0.01, world_size=world_size
    )
    opts = factory.optimizers(model, settings)
    losses = []
    for step in range(STEPS):
        batch = data[step, rows]
        loss = wrapped(batch[:, :-1], batch[:, 1:])
        loss.backward()
        for opt in opts:
            opt.step()
        model.zero_grad(set_to_none=True)
        losses.append(loss.item())
    return losses


NS_BATCHES: list[int] = []  # matrices per Newton-Schulz call, to see the work was split


def counting_newton_schulz(G, steps=5):
    """The real Newton-Schulz, recording how many matrices each call got."""
    NS_BATCHES.append(G.size(0) if G.ndim == 3 else 1)
    return ORIGINAL_NS(G, steps=steps)


ORIGINAL_NS = muon.zeropower_via_newtonschulz5
muon.zeropower_via_newtonschulz5 = counting_newton_schulz


def main() -> None:
    """Train under DDP, compare replicas, then compare with single-process training."""
    torch.use_deterministic_algorithms(True)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    factory, model, data = make_model_and_data()
    per = BATCH // world
    mine = slice(rank * per, (rank + 1) * per)
    train(factory, model, DDP(model), data, mine, world_size=world)  # sharded Muon
    sharded_work = sum(NS_BATCHES)
    NS_BATCHES.clear()
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    _, unsharded, _ = make_model_and_data()
    train(factory, unsharded, DDP(unsharded), data, mine, world_size=1)
    unsharded_work = sum(NS_BATCHES)
    flat_unsharded = torch.cat([p.detach().reshape(-1) for p in unsharded.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    if rank == 0:
        _, single, _ = make_model_and_data()
        train(factory, single, single, data, slice(0, BATCH))
        ref = torch.cat([p.detach().reshape(-1) for p in single.parameters()])
        init = torch.cat([p.detach().reshape(-1) for p in make_model_and_data()[1].parameters()])
        result = {
            "world_size": world,
            "replica_max_diff": max((g - gathered[0]).abs().max().item() for g in gathered),
            "single_max_diff": (flat - ref).abs().max().item(),
            "sharded_vs_unsharded_max_diff": (flat - flat_unsharded).abs().max().item(),
            "steps": STEPS,
            "ns_matrices_sharded": sharded_work,
            "ns_matrices_unsharded": unsharded_work,
            "moved": (ref - init).abs().max().item(),
        }
        with open(sys.argv[1], "w") as f:
            json.dump(result, f)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()

"""Serving speed: the real chat server under 1, 8 and 32 concurrent clients.

Starts ``nanochat serve`` (one worker, ``--max-batch`` slots: 8 as the server's default) on a
random free port of 127.0.0.1 and, for each level of concurrency, has every client send
requests with different prompts (128 new tokens each, seeded sampling) through nanochat's
streaming route; with 32 clients, 24 requests at a time wait in the queue. It prints, per level:

- aggregate tokens/s: tokens the server generated (``/stats``) over the level's wall time;
- time to first token (request sent -> first text event): median and p95;

and the ratio the target is about (8 clients >= 4x the aggregate throughput of 1 client).
Without ``--run`` it first makes the tiny model in a temporary ``NANOCHAT_HOME``: the ``tiny``
preset's shape (d3, w192, context 256, vocab 4,096), pretrained for a few steps only (speed
does not depend on the weights, and an undertrained model rarely stops before its budget).

The worker runs one torch thread by default (``--threads``): on a small machine shared with
other jobs, torch's intra-op threads wait for each other on every small operation of a decode
step (measured on the 2-core VM under a load of 11: 8 tokens/s with torch's 2 threads against
61 with one, engine alone, batch 1)::

    uv run python -m benchmarks.serve                       # makes the tiny model first
    uv run python -m benchmarks.serve --run t --source sft  # an existing run
    uv run python -m benchmarks.serve --threads 0           # torch's default threads
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp

REPO = Path(__file__).resolve().parents[1]
LEVELS = (1, 8, 32)
TRAIN = [
    "run", "tokenizer", "pretrain", "--preset", "tiny", "--run", "bench",
    "-o", "tokenizer.max_chars=3000000", "-o", "pretrain.max_steps=3",
    "-o", "pretrain.eval_every=3", "-o", "pretrain.eval_tokens=4096",
    "-o", "pretrain.sample_tokens=1", "-o", "pretrain.checkpoint_every=3",
]  # fmt: skip


def make_tiny_run(home: Path) -> None:
    """Train the tiny model for a few steps in ``home`` (run ``bench``)."""
    print("making the tiny model (tokenizer + 3 pretraining steps)...", flush=True)
    subprocess.run(
        [sys.executable, "-m", "nanochat", *TRAIN],
        env={**os.environ, "NANOCHAT_HOME": str(home)},
        check=True,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def start_server(
    home: Path, run: str, source: str | None, slots: int, threads: int
) -> tuple[Any, int]:
    """``nanochat serve`` on a free port; returns the process and the port."""
    args = ["serve", "--run", run, "--port", "0", "--max-batch", str(slots)]
    args += ["-o", f"threads={threads}"]
    if source:
        args += ["--source", source]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nanochat", *args, "-o", "access_log=false"],
        env={**os.environ, "NANOCHAT_HOME": str(home)},
        cwd=REPO,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert proc.stderr is not None
    for line in proc.stderr:
        match = re.search(r"on http://127\.0\.0\.1:(\d+)/", line)
        if match:
            return proc, int(match.group(1))
    raise SystemExit(f"the server did not start (exit code {proc.wait()})")


async def one_request(
    session: aiohttp.ClientSession, url: str, prompt: str, tokens: int, seed: int
) -> float:
    """Send one request and read its stream; returns the time to the first text event."""
    body = {
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": tokens,
        "temperature": 0.8,
        "seed": seed,
    }
    sent = time.perf_counter()
    first = None
    async with session.post(url, json=body) as response:
        if response.status != 200:
            raise SystemExit(f"request failed: {response.status} {await response.text()}")
        async for line in response.content:
            if line.startswith(b'data: {"token"'):
                first = time.perf_counter() - sent
                break
        async for _ in response.content.iter_any():  # the rest, unparsed (/stats counts)
            pass
    return first if first is not None else float("nan")


async def level(port: int, clients: int, requests_each: int, tokens: int) -> dict[str, Any]:
    """``clients`` clients, each sending ``requests_each`` requests one after the other."""
    base = f"http://127.0.0.1:{port}"
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:
        before = await stats(session, base)

        async def client(c: int) -> list[float]:
            return [
                await one_request(
                    session,
                    f"{base}/chat/completions",
                    f"Client {c} asks question {r}: tell me about the number {c * 31 + r}.",
                    tokens,
                    seed=c * 1000 + r,
                )
                for r in range(requests_each)
            ]

        started = time.perf_counter()
        ttfts = [t for ts in await asyncio.gather(*(client(c) for c in range(clients))) for t in ts]
        wall = time.perf_counter() - started
        after = await stats(session, base)
    generated = after["tokens_served"] - before["tokens_served"]
    return {"tokens": generated, "seconds": wall, "ttfts": ttfts}


def percentile(values: list[float], q: float) -> float:
    """The ``q`` quantile (nearest rank) of ``values``."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def stats(session: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    """``GET /stats``."""
    async with session.get(f"{base}/stats") as response:
        result: dict[str, Any] = await response.json()
        return result


def main() -> int:
    """Measure every level; exit status 1 when 8 clients are not 4x one client."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", help="an existing run (default: make the tiny model)")
    parser.add_argument("--source", help="its stage to serve (default: newest chat model)")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per request")
    parser.add_argument("--requests", type=int, default=2, help="requests per client")
    parser.add_argument("--max-batch", type=int, default=8, help="the worker's slots")
    parser.add_argument("--rounds", type=int, default=3, help="measurements of each level")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads of the worker (0: torch's default)"
    )
    args = parser.parse_args()
    if args.run:
        home = Path(os.environ.get("NANOCHAT_HOME", Path.home() / ".cache" / "nanochat"))
        run, source = args.run, args.source
    else:
        home = Path(tempfile.mkdtemp(prefix="nanochat-serve-bench-"))
        make_tiny_run(home)
        run, source = "bench", "pretrain"
    proc, port = start_server(home, run, source, args.max_batch, args.threads)
    rounds: dict[int, list[dict[str, Any]]] = {n: [] for n in LEVELS}
    try:
        asyncio.run(level(port, 2, 1, 8))  # warm-up
        for _ in range(args.rounds):  # levels interleaved, so a change of load hits them all
            for n in LEVELS:
                rounds[n].append(asyncio.run(level(port, n, args.requests, args.tokens)))
    finally:
        proc.terminate()
        proc.wait(60)
    print(
        f"run {run!r}, {args.tokens} new tokens per request, {args.requests} per client, "
        f"{args.max_batch} slots, {args.threads or 'default'} torch thread(s), "
        f"{os.cpu_count()} CPUs, median of {args.rounds} rounds"
    )
    print(f"{'clients':>7} {'tokens/s':>9} {'(rounds)':<22} {'TTFT median':>11} {'TTFT p95':>9}")
    speed = {}
    for n, results in rounds.items():
        per_round = [r["tokens"] / r["seconds"] for r in results]
        speed[n] = statistics.median(per_round)
        ttfts = [t for r in results for t in r["ttfts"]]
        shown = "/".join(f"{x:.0f}" for x in per_round)
        print(
            f"{n:>7} {speed[n]:>9.0f} {'(' + shown + ')':<22} "
            f"{1000 * statistics.median(ttfts):>8.0f} ms {1000 * percentile(ttfts, 0.95):>6.0f} ms"
        )
    ratio = speed[8] / speed[1]
    print(f"8 clients / 1 client: {ratio:.1f}x (target >= 4x); 32 / 1: {speed[32] / speed[1]:.1f}x")
    return 0 if ratio >= 4 else 1


if __name__ == "__main__":
    sys.exit(main())

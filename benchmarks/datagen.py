"""``nanochat datagen`` throughput against a teacher of fixed latency, by requests in flight.

A local aiohttp teacher (127.0.0.1, OpenAI's chat completions, streamed) answers every request
after ``--latency`` seconds, as a remote API would; the script runs the real local runner (the
``identity`` template, validation, dedup, jsonl shards) for ``-n`` records at each
``--concurrency`` level and prints records/s and the speed-up over one request at a time. With
``--latency 0`` it measures the runner's own overhead per record::

    uv run python -m benchmarks.datagen                     # latency 0.2 s, 1 / 4 / 16 / 64
    uv run python -m benchmarks.datagen --latency 0 -n 2000 --concurrency 1 16
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import threading
import time
from pathlib import Path

from aiohttp import web


def start_teacher(latency: float) -> tuple[int, asyncio.AbstractEventLoop]:
    """The teacher in a thread; returns its port and loop."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    port = [0]

    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        key = request.headers.get("X-Datagen-Job", "")
        if latency:
            await asyncio.sleep(latency)
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        text = f"I'm nanochat, a small language model (answer {key})."
        chunks = [
            {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]},
            {"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 100, "completion_tokens": 20}},
        ]
        body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
        await response.write(body.encode())
        await response.write_eof()
        return response

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", handle)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0, backlog=1024)
        await site.start()
        port[0] = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        ready.set()

    def serve() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main())
        loop.run_forever()

    threading.Thread(target=serve, daemon=True).start()
    ready.wait(30)
    return port[0], loop


def measure(port: int, n: int, concurrency: int) -> tuple[float, dict[str, object]]:
    """Seconds to generate ``n`` records at ``concurrency``, and the run's summary."""
    from nanochat_datasets.datagen.runner import RunSettings, run_local
    from nanochat_datasets.datagen.store import OutputStore
    from nanochat_datasets.datagen.tally import Tally
    from nanochat_datasets.datagen.teacher import TeacherConfig

    from nanochat.core.registry import Registry

    template = Registry.load().create("template", "identity")
    with tempfile.TemporaryDirectory() as tmp:
        store = OutputStore(Path(tmp), "identity", {}, template.dedup_key).open()
        tally = Tally(store, template, 0, n, 10 * n)
        teacher = TeacherConfig(f"http://127.0.0.1:{port}/v1/chat/completions", "bench")
        started = time.perf_counter()
        asyncio.run(run_local(tally, template, teacher, RunSettings(concurrency, 0, False), "b"))
        elapsed = time.perf_counter() - started
        assert store.count == n, tally.summary()
        return elapsed, tally.summary()


def main() -> None:
    """Parse the arguments, run every level, print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=256, help="records per level")
    parser.add_argument("--latency", type=float, default=0.2, help="teacher seconds per answer")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    args = parser.parse_args()
    port, _ = start_teacher(args.latency)
    print(f"teacher latency {args.latency:g}s, {args.n} records per level (identity template)")
    print(
        f"{'in flight':>9} {'seconds':>8} {'records/s':>10} {'speed-up':>9} {'max in flight':>14}"
    )
    base = None
    for level in args.concurrency:
        elapsed, summary = measure(port, args.n, level)
        rate = args.n / elapsed
        base = base or rate
        print(
            f"{level:>9} {elapsed:>8.2f} {rate:>10.1f} {rate / base:>8.1f}x "
            f"{summary['max_in_flight']:>14}"
        )


if __name__ == "__main__":
    main()

"""The ``aiohttp`` server component: start the workers, serve HTTP, shut down gracefully.

``serve(ctx)`` chooses the checkpoint once (every worker loads that one), starts the worker
processes and waits until each has loaded the model, then listens. SIGTERM or SIGINT stops it
gracefully: it stops listening and answers new requests 503, lets running answers finish for up
to ``shutdown_timeout_s`` seconds, cuts what is left with a final error event, and stops the
workers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from typing import Any

from nanochat.core.errors import UsageError
from nanochat.plugins.server.options import ServerOptions
from nanochat.plugins.server.worker import WorkerSpec

log = logging.getLogger(__name__)
STATUS_LOG = "nanochat.server"  # start and stop lines, shown at the default log level
ACCESS_LOG = "nanochat.server.access"
ACCESS_FORMAT = '%a "%r" %s %b %Tfs'
ENV_API_KEY = "NANOCHAT_API_KEY"


def parse_devices(options: ServerOptions) -> list[str]:
    """One device per worker: ``--devices`` as given, else ``workers`` CPU replicas, else the GPU
    when there is one.

    Raises:
        UsageError: an unknown or unavailable device.
    """
    import torch

    if options.devices.strip():
        devices = [d.strip() for d in options.devices.split(",") if d.strip()]
        for device in devices:
            try:
                parsed = torch.device(device)
            except RuntimeError:
                raise UsageError(
                    f"--devices: {device!r} is not a device (e.g. cuda:0, cpu)"
                ) from None
            if parsed.type == "cuda":
                count = torch.cuda.device_count()
                if (parsed.index or 0) >= count:
                    raise UsageError(
                        f"--devices: {device} is not available (this machine has {count} "
                        f"CUDA device{'s' if count != 1 else ''})"
                    )
            elif parsed.type != "cpu":
                raise UsageError(f"--devices: {device!r}: only cpu and cuda:N are supported")
        return [str(torch.device(d)) if d != "cuda" else "cuda:0" for d in devices]
    if options.workers == 1 and torch.cuda.is_available():
        return ["cuda:0"]
    return ["cpu"] * options.workers


def check_address(host: str, port: int) -> None:
    """Fail early, before the workers load, when ``host:port`` cannot be bound.

    Raises:
        UsageError: an unknown host, or a port in use or not allowed.
    """
    import socket

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise UsageError(f"--host {host!r}: {exc.strerror}") from None
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the server will
        try:
            sock.bind(address)
        except OSError as exc:
            raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None


def threads_per_worker(devices: list[str], requested: int) -> int:
    """Torch threads of each CPU worker: the cores shared out among several CPU workers, at
    least one; 0 (torch's default) for a single one."""
    if requested:
        return requested
    cpu_workers = sum(1 for d in devices if d == "cpu")
    if cpu_workers <= 1:
        return 0
    return max(1, (os.cpu_count() or 1) // cpu_workers)


class AiohttpServer:
    """nanochat's chat server: aiohttp, continuous batching, a pool of worker processes.

    Args:
        options: the server's options.
    """

    def __init__(self, options: ServerOptions | None = None) -> None:
        self.options = options or ServerOptions()

    def serve(self, ctx: Any) -> None:
        """Serve the run of ``ctx`` until SIGTERM or SIGINT.

        Raises:
            UsageError: bad devices.
            StageError: the run has no such checkpoint.
            ServerStartError: a worker could not load the model.
        """
        from nanochat.core.chat import choose_checkpoint

        options: ServerOptions = ctx.options or self.options
        check_address(options.host, options.port)
        checkpoint = choose_checkpoint(ctx, options.source or None)
        tokenizer = ctx.load_tokenizer()
        devices = parse_devices(options)
        threads = threads_per_worker(devices, options.threads)
        selection = ctx.registry.selection
        plugin_options = (
            *sorted(selection.enabled),
            *(f"no:{b}" for b in sorted(selection.blocked)),
        )
        defaults = {
            kind: resolved.qualified_name
            for kind, resolved in (("model", ctx.plan.model), ("tokenizer", ctx.plan.tokenizer))
            if resolved is not None
        }
        specs = [
            WorkerSpec(
                index=i,
                device=device,
                run_name=ctx.run_name,
                checkpoint=checkpoint,
                slots=options.max_batch,
                threads=threads if device == "cpu" else 0,
                plugin_options=plugin_options,
                defaults=defaults,
            )
            for i, device in enumerate(devices)
        ]
        source = f"{checkpoint.path.parent.parent.name}/{checkpoint.path.name}"
        api_key = options.api_key or os.environ.get(ENV_API_KEY, "")
        asyncio.run(_run(options, specs, tokenizer, ctx.run_name, source, api_key))


async def _run(
    options: ServerOptions,
    specs: list[WorkerSpec],
    tokenizer: Any,
    model_id: str,
    source: str,
    api_key: str,
) -> None:
    """Start the pool, listen, and shut down on a signal."""
    from aiohttp import web

    from nanochat.plugins.server.app import build_app
    from nanochat.plugins.server.pool import Failure, WorkerPool
    from nanochat.plugins.server.state import ServerState

    status = logging.getLogger(STATUS_LOG)
    if logging.getLogger().level <= logging.WARNING:  # not -q
        status.setLevel(min(logging.INFO, logging.getLogger().level))
    loop = asyncio.get_running_loop()
    stop, cut = asyncio.Event(), asyncio.Event()

    def on_signal() -> None:  # the first stops gracefully, a second cuts at once
        (cut if stop.is_set() else stop).set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal)
    pool = WorkerPool(specs, options.queue_size)
    runner: web.AppRunner | None = None
    try:
        starting = asyncio.ensure_future(pool.start())
        waiter = asyncio.ensure_future(stop.wait())
        await asyncio.wait({starting, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            log.warning("interrupted while the workers were loading")
            return
        waiter.cancel()
        starting.result()
        context = min(int(w.info["context"]) for w in pool.workers)
        state = ServerState(
            pool=pool,
            tokenizer=tokenizer,
            context=context,
            model_id=model_id,
            checkpoint=source,
            max_messages=options.max_messages,
            max_tokens_default=options.max_tokens_default,
            max_body_bytes=options.max_body_bytes,
            api_key=api_key,
        )
        app = build_app(state)
        access: dict[str, Any] = {"access_log": None}
        if options.access_log:
            access = {
                "access_log": logging.getLogger(ACCESS_LOG),
                "access_log_format": ACCESS_FORMAT,
            }
        runner = web.AppRunner(app, handler_cancellation=True, **access)
        await runner.setup()
        site = web.TCPSite(runner, options.host, options.port)
        try:
            await site.start()
        except OSError as exc:
            raise UsageError(f"cannot listen on {options.host}:{options.port}: {exc}") from None
        port = _bound_port(site, options.port)
        where = ", ".join(f"{s.device}" for s in specs)
        status.info(
            "serving run %r (%s) on http://%s:%d/ with %d worker%s (%s), %d slots each%s",
            model_id,
            source,
            options.host,
            port,
            len(specs),
            "s" if len(specs) != 1 else "",
            where,
            options.max_batch,
            "; API key required" if api_key else "",
        )
        await stop.wait()
        status.info(
            "shutting down: finishing %d running answer(s) for up to %g s (again to cut them)",
            pool.active,
            options.shutdown_timeout_s,
        )
        state.draining = True
        await site.stop()
        await _drain(pool, options.shutdown_timeout_s, cut)
        pool.fail_all(Failure(503, "the server is shutting down", "service_unavailable"))
        await asyncio.sleep(0)  # let handlers write their last event
    finally:
        if runner is not None:
            await runner.cleanup()
        pool.close()


async def _drain(pool: Any, timeout: float, cut: asyncio.Event) -> None:
    """Wait until no request runs or waits, at most ``timeout`` seconds or until ``cut``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while pool.active and asyncio.get_running_loop().time() < deadline and not cut.is_set():
        await asyncio.sleep(0.05)


def _bound_port(site: Any, requested: int) -> int:
    """The port the site listens on (the chosen one when ``requested`` is 0)."""
    server = getattr(site, "_server", None)
    sockets = getattr(server, "sockets", None) or []
    for sock in sockets:
        return int(sock.getsockname()[1])
    return requested

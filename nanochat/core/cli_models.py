"""``nanochat chat``, ``serve`` and ``export``: talk to a run's chat model, serve it over HTTP, or
write it in another tool's format."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from nanochat.core import registry as registry_module
from nanochat.core.cli import DEFAULT_COMPONENTS, single_option
from nanochat.core.errors import UsageError


@click.command("chat", context_settings={"show_default": True})
@single_option("--run", "run_name", default="default", help="Run whose model to talk to.")
@single_option(
    "--source",
    default=None,
    help="Stage whose newest checkpoint to use (a name or unique prefix, e.g. sft, mid); "
    "default: the newest chat checkpoint.",
)
@click.option("-p", "--prompt", default=None, help="Answer this one message and exit.")
@click.option("--temperature", type=click.FloatRange(min=0), default=0.6)
@click.option("--top-k", type=click.IntRange(min=0), default=50, help="0: off.")
@click.option("--top-p", type=click.FloatRange(min=0, max=1, min_open=True), default=1.0)
@click.option("--seed", type=int, default=None, help="Sampling seed (default: random).")
@click.option("--max-tokens", type=click.IntRange(min=1), default=256)
@click.option(
    "--device", default="auto", type=click.Choice(["auto", "cuda", "mps", "cpu"]), help="Where."
)
def chat_command(
    run_name: str,
    source: str | None,
    prompt: str | None,
    temperature: float,
    top_k: int,
    top_p: float,
    seed: int | None,
    max_tokens: int,
    device: str,
) -> None:
    """Chat with a run's newest chat model in the terminal (/clear forgets, /exit quits)."""
    from nanochat.core.chat import ChatSession, load_chat_model
    from nanochat.core.engine import SamplingParams

    chat = load_chat_model(
        registry_module.get_registry(), run_name, source, device, DEFAULT_COMPONENTS
    )
    params = SamplingParams(max_tokens, temperature, top_k or None, top_p, seed)
    session = ChatSession(chat, params)

    def answer(text: str) -> None:
        for piece in session.reply(text):
            click.echo(piece, nl=False)
        click.echo()

    if prompt is not None:
        answer(prompt)
        return
    click.echo(f"nanochat: {run_name} ({chat.source}); /clear forgets, /exit quits", err=True)
    while True:
        try:
            line = input("you> " if sys.stdin.isatty() else "")
        except EOFError:
            break
        text = line.strip()
        if text in ("/exit", "/quit"):
            break
        if text == "/clear":
            session.clear()
            click.echo("(conversation cleared)", err=True)
            continue
        if not text:
            continue
        click.echo("nanochat> ", nl=False)
        answer(text)


@click.command("serve", context_settings={"show_default": True})
@single_option("--run", "run_name", default="default", help="Run whose model to serve.")
@single_option(
    "--source",
    default=None,
    help="Stage whose newest checkpoint to serve (a name or unique prefix); default: the "
    "newest chat checkpoint.",
)
@single_option("--host", default=None, help="Address to bind [default: 127.0.0.1].")
@single_option(
    "--port", type=click.IntRange(0, 65535), help="Port (0: any free one) [default: 8000]."
)
@single_option(
    "--workers", type=click.IntRange(min=1), help="Model replicas on the CPU [default: 1]."
)
@single_option("--devices", help="One worker per device, e.g. cuda:0,cuda:1.")
@single_option("--max-batch", type=click.IntRange(min=1), help="Slots per worker [default: 8].")
@single_option(
    "--queue-size", type=click.IntRange(min=0), help="Requests that may wait [default: 64]."
)
@single_option("--api-key", help="Require 'Authorization: Bearer KEY' (or set NANOCHAT_API_KEY).")
@single_option("--server", "server_name", default="aiohttp", help="Server plugin.")
@click.option(
    "-o",
    "--option",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Another server option, e.g. -o shutdown_timeout_s=30 (`nanochat show server aiohttp`).",
)
def serve_command(
    run_name: str,
    source: str | None,
    host: str | None,
    port: int | None,
    workers: int | None,
    devices: str | None,
    max_batch: int | None,
    queue_size: int | None,
    api_key: str | None,
    server_name: str,
    overrides: tuple[str, ...],
) -> None:
    """Serve a run's chat model over HTTP: a web UI, nanochat's streaming API and OpenAI's.

    Stop it with Ctrl-C or SIGTERM: running answers finish first (up to shutdown_timeout_s).
    """
    from nanochat.core.serving import serve_run, server_overrides

    if workers is not None and devices is not None:
        raise UsageError("give --workers N (CPU replicas) or --devices LIST, not both")
    flags = {
        "source": source,
        "host": host,
        "port": port,
        "workers": workers,
        "devices": devices,
        "max_batch": max_batch,
        "queue_size": queue_size,
        "api_key": api_key,
    }
    options = server_overrides(server_name, flags, overrides)
    reg = registry_module.get_registry()
    serve_run(reg, server_name, run_name, options, defaults=DEFAULT_COMPONENTS)


@click.command("export", context_settings={"show_default": True})
@click.argument("out", type=click.Path(path_type=Path))
@single_option("--run", "run_name", default="default", help="Run whose model to export.")
@single_option(
    "--format",
    "fmt",
    required=True,
    help="Format the model plugin writes: llama writes hf and gguf, gpt writes hf.",
)
@single_option(
    "--source",
    default=None,
    help="Stage whose newest checkpoint to export (a name or unique prefix); default: the "
    "run's newest model.",
)
def export_command(out: Path, run_name: str, fmt: str, source: str | None) -> None:
    """Export a run's newest model and its tokenizer to OUT in another tool's format.

    `--format hf` writes a Hugging Face folder (a llama run loads with transformers'
    LlamaForCausalLM); `--format gguf` writes a GGUF file (llama runs).
    """
    from nanochat.core.export import export_run

    written = export_run(
        registry_module.get_registry(), run_name, fmt, out, source, DEFAULT_COMPONENTS
    )
    for path in written:
        click.echo(str(path))

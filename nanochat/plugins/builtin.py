"""The plugin of the ``nanochat`` distribution: the built-in loggers, tokenizers, models, tools,
chat server and the ``import`` stage and command. It goes through the same entry-point door as
any third-party plugin."""

from __future__ import annotations

import click

from nanochat.core.components import ComponentSpec
from nanochat.core.hookspecs import hookimpl
from nanochat.plugins.gpt.options import GPTOptions
from nanochat.plugins.llama.options import ImportOptions, LlamaOptions
from nanochat.plugins.loggers.options import ConsoleOptions, JsonlOptions, WandbOptions
from nanochat.plugins.server.options import ServerOptions
from nanochat.plugins.tokenizers.options import TokenizerOptions
from nanochat.plugins.tools.options import CalculatorOptions


@hookimpl
def nanochat_register_loggers() -> list[ComponentSpec]:
    """The console, JSONL and wandb metric loggers."""
    return [
        ComponentSpec(
            kind="logger",
            name="console",
            factory="nanochat.plugins.loggers.console:ConsoleLogger",
            summary="print metric records to the terminal (rank 0)",
            options=ConsoleOptions,
        ),
        ComponentSpec(
            kind="logger",
            name="jsonl",
            factory="nanochat.plugins.loggers.jsonl:JsonlLogger",
            summary="append every record to metrics.jsonl in the run directory",
            options=JsonlOptions,
        ),
        ComponentSpec(
            kind="logger",
            name="wandb",
            factory="nanochat.plugins.loggers.wandb_logger:WandbLogger",
            summary="send metrics to Weights & Biases (offline with WANDB_MODE=offline)",
            options=WandbOptions,
        ),
    ]


@hookimpl
def nanochat_register_tokenizers() -> list[ComponentSpec]:
    """`rustbpe` (nanochat's Rust BPE, the default), `hf-bpe` (HF tokenizers) and `pretrained`
    (an imported model's own tokenizer)."""
    return [
        ComponentSpec(
            kind="tokenizer",
            name="rustbpe",
            factory="nanochat.plugins.tokenizers.rustbpe_adapter:RustBPEFactory",
            summary="byte-level BPE in Rust (nanochat-rustbpe): parallel training and encoding",
            options=TokenizerOptions,
        ),
        ComponentSpec(
            kind="tokenizer",
            name="hf-bpe",
            factory="nanochat.plugins.tokenizers.hf_adapter:HFBPEFactory",
            summary="byte-level BPE trained and run by Hugging Face `tokenizers`",
            options=TokenizerOptions,
        ),
        ComponentSpec(
            kind="tokenizer",
            name="pretrained",
            factory="nanochat.plugins.tokenizers.pretrained:PretrainedFactory",
            summary="an imported model's own BPE and chat format (made by `nanochat import`)",
            options=TokenizerOptions,
            extra={"trainable": False},
        ),
    ]


@hookimpl
def nanochat_register_models() -> list[ComponentSpec]:
    """The GPT model (rotary, QK-norm, relu², GQA, softcap; Muon + AdamW) and the Llama."""
    return [
        ComponentSpec(
            kind="model",
            name="gpt",
            factory="nanochat.plugins.gpt.factory:GPTFactory",
            summary="nanochat GPT: rotary, QK-norm, relu² MLP, GQA, logit softcap; Muon + AdamW",
            options=GPTOptions,
        ),
        ComponentSpec(
            kind="model",
            name="llama",
            factory="nanochat.plugins.llama.factory:LlamaFactory",
            summary="Llama: RMSNorm, rotary (HF layout), GQA, SwiGLU, optional tied embeddings",
            options=LlamaOptions,
        ),
    ]


@hookimpl
def nanochat_register_tools() -> list[ComponentSpec]:
    """The calculator: exact arithmetic and ``"text".count("x")`` with its own parser."""
    return [
        ComponentSpec(
            kind="tool",
            name="calculator",
            factory="nanochat.plugins.tools.calculator:Calculator",
            summary="exact arithmetic (+ - * / **) and str.count, parsed without eval",
            options=CalculatorOptions,
        ),
    ]


@hookimpl
def nanochat_register_servers() -> list[ComponentSpec]:
    """The aiohttp chat server: nanochat's streaming protocol, OpenAI's API, the web UI."""
    return [
        ComponentSpec(
            kind="server",
            name="aiohttp",
            factory="nanochat.plugins.server.server:AiohttpServer",
            summary="chat server: streaming + OpenAI API, continuous batching, worker pool, web UI",
            options=ServerOptions,
        ),
    ]


@hookimpl
def nanochat_register_stages() -> list[ComponentSpec]:
    """The ``import`` stage: pretrained weights (GGUF, Hugging Face) become a llama run."""
    return [
        ComponentSpec(
            kind="stage",
            name="import",
            factory="nanochat.plugins.llama.importer:ImportStage",
            summary="import a GGUF file or a Hugging Face Llama folder with its tokenizer",
            options=ImportOptions,
            extra={"report_label": "IMPORT"},
            produces=("model", "chat", "tokenizer"),
        ),
    ]


@hookimpl
def nanochat_register_commands(cli: click.Group) -> None:
    """Adds ``nanochat import PATH --run NAME``."""
    from nanochat.plugins.llama.cli import import_command

    cli.add_command(import_command)

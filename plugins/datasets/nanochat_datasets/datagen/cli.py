"""The ``nanochat datagen`` command: ``nanochat datagen TEMPLATE ...`` and ``... worker``.

``nanochat datagen TEMPLATE ...`` is short for ``nanochat datagen generate TEMPLATE ...``.
Heavy imports (aiohttp, Celery) happen inside the commands, so ``nanochat --help`` stays fast.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import click

from nanochat.core.errors import UsageError

RATE = re.compile(r"^\s*(?P<value>[0-9]*\.?[0-9]+)\s*(?:/\s*(?P<unit>s|sec|m|min|h|hour))?\s*$")
RATE_UNITS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hour": 3600.0}


class DefaultCommandGroup(click.Group):
    """A group whose first argument, when it names no subcommand, goes to ``generate``."""

    default_command = "generate"

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        """Insert the default command before arguments that name no subcommand."""
        if args and args[0] not in self.commands and args[0] not in ("-h", "--help"):
            args = [self.default_command, *args]
        return super().parse_args(ctx, args)


def parse_rate(text: str) -> float:
    """Requests per second from ``5``, ``5/s``, ``300/min`` or ``1000/h`` (0: no limit).

    Raises:
        UsageError: anything else.
    """
    match = RATE.match(text or "0")
    if not match:
        raise UsageError(f"--rate {text!r}: expected a number of requests per second, e.g. 5/s")
    value = float(match.group("value")) / RATE_UNITS[match.group("unit")]
    if not math.isfinite(value):
        raise UsageError(f"--rate {text!r} is not a finite number")
    return value


def template_options(resolved: Any, overrides: tuple[str, ...]) -> Any:
    """The template's options with ``-o KEY=VALUE`` (or ``-o TEMPLATE.KEY=VALUE``) applied.

    Raises:
        UsageError: a malformed override, an unknown key or a bad value.
    """
    from nanochat.core.config import apply_overrides, validate_options

    name = resolved.spec.name
    changes: dict[str, str] = {}
    for text in overrides:
        target, sep, value = text.partition("=")
        if not sep or not target.strip():
            raise UsageError(f"bad option {text!r}: expected KEY=VALUE, e.g. -o name=Ada")
        scope, dot, key = target.strip().rpartition(".")
        if dot and scope not in (name, resolved.qualified_name):
            raise UsageError(f"-o {text}: {scope!r} is not the template {name!r}")
        changes[key] = value
    options = apply_overrides(resolved.spec.options(), changes, name)
    validate_options(options, name)
    return options


@click.group(cls=DefaultCommandGroup, no_args_is_help=True)
def datagen() -> None:
    """Generate synthetic conversations with a teacher model behind an OpenAI-compatible API.

    \b
    nanochat datagen TEMPLATE --endpoint URL --model NAME -n N --out DIR [...]
        (short for `nanochat datagen generate TEMPLATE ...`)
    nanochat datagen worker --broker redis://HOST:6379/0
        (runs the jobs that `nanochat datagen ... --broker URL` enqueues)

    Templates are plugins: `nanochat list templates` lists them.
    """


@datagen.command("generate")
@click.argument("template")
@click.option("--endpoint", required=True, help="The teacher's API base (http://HOST:PORT/v1).")
@click.option("--model", required=True, help="The model name sent with every request.")
@click.option("-n", "count", type=click.IntRange(min=1), required=True, help="Records wanted.")
@click.option(
    "--out",
    type=click.Path(path_type=Path),
    required=True,
    help="Output folder: TEMPLATE-NNNNN.jsonl shards (re-runs resume it).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 4096),
    default=8,
    show_default=True,
    help="Requests in flight (with --broker: jobs enqueued at once).",
)
@click.option(
    "--rate",
    default="0",
    show_default=True,
    help="Most requests per second: 5, 5/s, 300/min (0: no limit).",
)
@click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Picks topics and personas.",
)
@click.option(
    "--api-key-env", metavar="VAR", default=None, help="Environment variable holding the API key."
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    help="Seconds per request.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 100),
    default=5,
    show_default=True,
    help="Retries of a failed request.",
)
@click.option(
    "--backoff",
    type=click.FloatRange(min=0),
    default=1.0,
    show_default=True,
    help="First retry delay ceiling in seconds (doubles, with jitter).",
)
@click.option(
    "--max-jobs",
    type=click.IntRange(min=0),
    default=0,
    help="Most new jobs to try [default: 10 x the records missing, at least 100].",
)
@click.option(
    "--shard-size",
    type=click.IntRange(min=1),
    default=10_000,
    show_default=True,
    help="Records per jsonl shard.",
)
@click.option(
    "--stream/--no-stream", default=True, show_default=True, help="Ask for streamed answers."
)
@click.option(
    "-o",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Template option (repeatable); `nanochat show template NAME` lists them.",
)
@click.option(
    "--broker",
    default=None,
    metavar="URL",
    help="Enqueue the jobs as Celery tasks on this Redis broker instead of running them here.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the usage summary as JSON.")
def generate(
    template: str,
    endpoint: str,
    model: str,
    count: int,
    out: Path,
    concurrency: int,
    rate: str,
    seed: int,
    api_key_env: str | None,
    timeout: float,
    retries: int,
    backoff: float,
    max_jobs: int,
    shard_size: int,
    stream: bool,
    overrides: tuple[str, ...],
    broker: str | None,
    as_json: bool,
) -> None:
    """Ask a teacher until OUT holds N records of TEMPLATE.

    Re-running the same command resumes: records already in OUT are kept and never repeated.
    """
    from nanochat.core.config import options_to_dict
    from nanochat.core.errors import NanochatError
    from nanochat.core.progress import write_line
    from nanochat.core.registry import create_component, get_registry
    from nanochat_datasets.datagen.runner import RunSettings
    from nanochat_datasets.datagen.store import OutputStore
    from nanochat_datasets.datagen.tally import Tally, format_summary
    from nanochat_datasets.datagen.teacher import TeacherConfig, chat_url

    requests_per_s = parse_rate(rate)
    try:
        url = chat_url(endpoint)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    api_key = None
    if api_key_env:
        api_key = os.environ.get(api_key_env)
        if not api_key and not broker:
            raise UsageError(f"--api-key-env {api_key_env}: ${api_key_env} is not set")
    if broker:
        from nanochat_datasets.datagen.distributed import check_broker

        check_broker(broker)
        if requests_per_s:
            raise UsageError(
                "with --broker, each worker sets its own rate: nanochat datagen worker --rate R"
            )
    resolved = get_registry().resolve("template", template)
    options = template_options(resolved, overrides)
    made = create_component(resolved, options)
    option_values = options_to_dict(options)
    store = OutputStore(
        out,
        resolved.spec.name,
        {"template": resolved.qualified_name, "options": option_values, "seed": seed},
        made.dedup_key,
        shard_size,
    ).open()
    missing = max(0, count - store.count)
    tally = Tally(store, made, seed, count, max_jobs or max(100, 10 * missing))
    tally.max_consecutive_failures = max(10, 2 * concurrency)
    teacher = TeacherConfig(url, model, api_key, timeout, retries, backoff, stream=stream)
    settings = RunSettings(concurrency, requests_per_s, show_progress=True)
    if missing == 0:
        write_line(f"{out}: already holds {store.count} records (wanted {count}); nothing to do")
        return
    try:
        if broker:
            from nanochat_datasets.datagen.distributed import run_distributed, run_id

            run = run_id(resolved.qualified_name, option_values, seed, model)
            run_distributed(
                tally,
                resolved.qualified_name,
                option_values,
                teacher,
                api_key_env,
                settings,
                broker,
                run,
                resolved.spec.name,
            )
        else:
            from nanochat_datasets.datagen.runner import run_local

            asyncio.run(run_local(tally, made, teacher, settings, resolved.spec.name))
    finally:
        summary = tally.summary()
        store.write_summary(summary)
        if as_json:
            click.echo(json.dumps(summary, indent=2, sort_keys=True))
        else:
            for line in format_summary(summary):
                write_line(line)
    if store.count < count:
        raise NanochatError(
            f"{out} holds {store.count} of {count} records after {tally.finished_jobs} jobs "
            f"(--max-jobs {tally.max_jobs}); run again to continue, or raise --max-jobs"
        )


@datagen.command("worker")
@click.option(
    "--broker", required=True, metavar="URL", help="The Redis broker (redis://HOST:6379/0)."
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 4096),
    default=8,
    show_default=True,
    help="Jobs run at once (threads).",
)
@click.option(
    "--rate",
    default="0",
    show_default=True,
    help="Most requests per second from this worker (0: no limit).",
)
@click.option(
    "--visibility-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=3600.0,
    show_default=True,
    help="Seconds after which a job taken by a worker that went away is handed out again.",
)
@click.option("--hostname", default=None, help="This worker's name (default: celery@HOST).")
def worker(
    broker: str, concurrency: int, rate: str, visibility_timeout: float, hostname: str | None
) -> None:
    """Run datagen jobs from a Redis broker (Celery).

    Consumes the jobs that `nanochat datagen TEMPLATE ... --broker URL` enqueues, until
    stopped; the teacher's API key comes from this machine's environment.
    """
    from nanochat_datasets.datagen.distributed import check_broker, start_worker

    check_broker(broker)
    start_worker(broker, concurrency, visibility_timeout, parse_rate(rate), hostname)

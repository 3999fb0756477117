"""The ``nanochat`` command line (click).

Plugins are loaded before click parses the arguments, so that plugin commands appear in
``--help``; ``-p NAME`` / ``-p no:NAME`` are read from the arguments first for that reason.
Errors meant for the user print one line and exit non-zero; ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import click

from nanochat.core import registry as registry_module
from nanochat.core.errors import NanochatError, UsageError
from nanochat.core.registry import Registry, normalize_kind

if TYPE_CHECKING:
    from nanochat.core.plan import RunPlan

_DEBUG_FLAG = "--debug"
# What `run` and `eval` use when neither the command, the run's record nor the preset names a
# model or tokenizer (the core itself knows no plugin by name).
DEFAULT_COMPONENTS = {"model": "gpt", "tokenizer": "rustbpe"}
CONSOLE = "nanochat/console"  # the built-in console logger (its output stream can be chosen)


def scan_plugin_options(args: Sequence[str]) -> list[str]:
    """The values of global ``-p``/``--plugin`` options that come before the subcommand."""
    values: list[str] = []
    index = 0
    while index < len(args):
        arg = args[index]
        if arg in ("-p", "--plugin") and index + 1 < len(args):
            values.append(args[index + 1])
            index += 2
            continue
        if arg.startswith("--plugin="):
            values.append(arg.split("=", 1)[1])
        elif arg.startswith("-p") and len(arg) > 2:
            values.append(arg[2:])
        elif not arg.startswith("-"):
            break
        index += 1
    return values


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "-p",
    "--plugin",
    "plugin_options",
    multiple=True,
    metavar="NAME",
    help="Enable plugin NAME, or block it with no:NAME (repeatable).",
)
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug messages).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors in the log output.")
@click.version_option(package_name="nanochat", prog_name="nanochat")
def cli(plugin_options: tuple[str, ...], debug: bool, verbose: int, quiet: bool) -> None:
    """nanochat: train a small ChatGPT-like model end to end, and serve it.

    Everything is a plugin: list them with `nanochat plugins`, the components they give with
    `nanochat list KIND`, and compose a pipeline with `nanochat run STAGE...`.

    \b
    Environment:
      NANOCHAT_HOME                       where runs live (default ~/.cache/nanochat)
      NANOCHAT_DISABLE_PLUGIN_AUTOLOAD=1  load only built-in plugins (plus -p NAME)
      NANOCHAT_STRICT_PLUGINS=1           fail when a plugin cannot be loaded
    """
    configure_logging(verbose, quiet)


def configure_logging(verbose: int, quiet: bool) -> None:
    """Log warnings (default), info (-v), debug (-vv) or errors only (-q) to stderr, for the core
    and every plugin alike."""
    level = (
        logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    )
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=level, force=True)


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("--all", "show_all", is_flag=True, help="Also list blocked and not-loaded plugins.")
def plugins_command(as_json: bool, show_all: bool) -> None:
    """List plugins with their version, status, hooks and components."""
    reg = registry_module.get_registry()
    infos = [p for p in reg.plugins if show_all or p.status in ("loaded", "failed")]
    if as_json:
        click.echo(json.dumps([p.as_dict() for p in infos], indent=2))
        return
    if not infos:
        click.echo("no plugins")
        return
    for p in infos:
        origin = "built-in" if p.builtin else (p.distribution or "registered in code")
        click.echo(f"{p.name} {p.version or ''} [{p.status}] ({origin})".replace("  ", " "))
        if p.error:
            click.echo(f"    error: {p.error}")
        if p.components:
            click.echo(f"    components: {', '.join(sorted(p.components))}")
        if p.hooks:
            click.echo(f"    hooks: {', '.join(sorted(p.hooks))}")


@cli.command("list")
@click.argument("kind")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list.")
@click.option("-v", "--verbose", is_flag=True, help="Presets: also list what each one sets.")
def list_command(kind: str, as_json: bool, verbose: bool) -> None:
    """List the components of KIND (models, tokenizers, datasets, stages, evals, servers,
    tools, loggers, templates) or the presets; `nanochat show KIND NAME` details one."""
    reg = registry_module.get_registry()
    rows: list[dict[str, Any]]
    if kind in ("preset", "presets"):
        rows = [
            {
                "name": name,
                "plugin": plugin,
                "summary": preset.summary,
                "overrides": dict(preset.overrides),
                "defaults": dict(preset.defaults),
                "stages": list(preset.stages),
            }
            for name, (plugin, preset) in sorted(reg.presets().items())
        ]
        if as_json:
            click.echo(json.dumps(rows, indent=2, default=str))
        for row in [] if as_json else rows:
            click.echo(f"{row['name']:<16} {row['summary']}  [{row['plugin']}]")
            sets: dict[str, Any] = {**row["defaults"], **row["overrides"]}
            if verbose and row["stages"]:
                click.echo(f"    speedrun: {' '.join(row['stages'])}")
            for target, value in sets.items() if verbose else ():
                click.echo(f"    {target} = {value!r}")
        return
    kind = normalize_kind(kind)
    ambiguous = reg.ambiguous_names(kind)
    rows = []
    for item in reg.components(kind):
        rows.append(
            {
                "name": item.spec.name,
                "qualified_name": item.qualified_name,
                "plugin": item.plugin,
                "summary": item.spec.summary,
                "ambiguous": item.spec.name in ambiguous,
                **(
                    {"data_kind": item.spec.extra["data_kind"]}
                    if "data_kind" in item.spec.extra
                    else {}
                ),
            }
        )
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no {kind}s are registered")
    for row in rows:
        name = row["qualified_name"] if row["ambiguous"] else row["name"]
        tag = f"({row['data_kind']}) " if "data_kind" in row else ""
        click.echo(f"{name:<24} {tag}{row['summary']}  [{row['plugin']}]")


@cli.command("show")
@click.argument("kind")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show_command(kind: str, name: str, as_json: bool) -> None:
    """Show component NAME of KIND: its plugin, summary, factory and every option with its
    type, default, allowed values and doc (`nanochat show preset NAME`: what a preset sets)."""
    from nanochat.core.option_docs import describe_component, format_component

    reg = registry_module.get_registry()
    if kind in ("preset", "presets"):
        plugin, preset = reg.presets()[reg.preset(name).name]
        info: dict[str, Any] = {
            "name": preset.name,
            "plugin": plugin,
            "summary": preset.summary,
            "overrides": dict(preset.overrides),
            "defaults": dict(preset.defaults),
        }
        lines = [f"preset {name}  [{plugin}]", f"  summary: {preset.summary}"]
        lines += [f"  {k} = {v!r}" for k, v in {**preset.defaults, **preset.overrides}.items()]
    else:
        info = describe_component(reg, reg.resolve(normalize_kind(kind), name))
        lines = format_component(info)
    click.echo(json.dumps(info, indent=2, default=str) if as_json else "\n".join(lines))


def single_option(
    *decls: str, default: Any = None, help: str = "", **kwargs: Any
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """A click option that may be given at most once (click would silently keep the last).

    Raises:
        UsageError: at parse time, when the option is repeated (``--run given twice``).
    """
    flag = max((d for d in decls if d.startswith("--")), key=len)

    def once(ctx: click.Context, param: click.Parameter, values: tuple[Any, ...]) -> Any:
        if len(values) > 1:
            times = "twice" if len(values) == 2 else f"{len(values)} times"
            given = ", ".join(repr(v) for v in values)
            raise UsageError(f"{flag} given {times} ({given}); give it once")
        return values[0] if values else default

    shown = f"  [default: {default}]" if default is not None else ""
    return click.option(
        *decls, multiple=True, callback=once, show_default=False, help=help + shown, **kwargs
    )


def component_options(example: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """The options shared by `run` and `eval`: -o, --model, --tokenizer, --device, --log."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        decorators: list[Callable[[Callable[..., Any]], Callable[..., Any]]] = [
            click.option(
                "-o",
                "--option",
                "overrides",
                multiple=True,
                metavar="SCOPE.KEY=VALUE",
                help=(
                    f"Override an option, e.g. -o {example} (repeatable). SCOPE is a stage, "
                    "eval-NAME, model, tokenizer, a logger or a dataset (-o "
                    "arithmetic.max_value=300); STAGE.DATASET.KEY=VALUE sets a dataset option "
                    "for that stage only (-o rl.arithmetic.max_value=300)."
                ),
            ),
            single_option("--model", help="Model plugin name [default: gpt]."),
            single_option("--tokenizer", help="Tokenizer plugin name [default: rustbpe]."),
            single_option(
                "--device",
                default="auto",
                type=click.Choice(["auto", "cuda", "mps", "cpu"]),
                help="Where to compute.",
            ),
            click.option(
                "--log",
                "loggers",
                multiple=True,
                metavar="NAME",
                help="Extra metric logger (console and jsonl are always on), e.g. wandb.",
            ),
        ]
        for option in reversed(decorators):
            function = option(function)
        return function

    return decorate


@contextlib.contextmanager
def torchrun_runtime(device: str) -> Iterator[Any]:
    """Under torchrun, a runtime joined to the process group (shut down at the end); else None,
    and stages create their runtime when they first need one."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:  # not under torchrun: no torch import yet
        yield None
        return
    from nanochat.core.runtime import init_runtime

    runtime = init_runtime(device)
    try:
        yield runtime
    finally:
        runtime.shutdown()


@cli.command("run", context_settings={"show_default": True})
@click.argument("stages", nargs=-1, required=True)
@single_option("--run", "run_name", default="default", help="Run name (folder under runs/).")
@single_option("--preset", help="Apply a preset's options first.")
@component_options("pretrain.max_steps=100")
def run_command(
    stages: tuple[str, ...],
    run_name: str,
    preset: str | None,
    overrides: tuple[str, ...],
    model: str | None,
    tokenizer: str | None,
    loggers: tuple[str, ...],
    device: str,
) -> None:
    """Run STAGES in order in run NAME, skipping finished ones and resuming an interrupted one.

    A stage is a stage plugin's name (`pretrain`, `plugin/name`) or `eval:NAME` for an evaluator.
    Works the same under `torchrun --nproc_per_node=N`.
    """
    from nanochat.core.pipeline import run_pipeline

    reg = registry_module.get_registry()
    plan = cli_plan(reg, stages, run_name, preset, overrides, model, tokenizer, loggers, device)
    with torchrun_runtime(device) as runtime:
        run_pipeline(plan, reg, runtime)


def cli_plan(
    reg: Registry,
    stages: Sequence[str],
    run_name: str,
    preset: str | None,
    overrides: Sequence[str],
    model: str | None,
    tokenizer: str | None,
    loggers: Sequence[str],
    device: str,
) -> RunPlan:
    """``plan_run`` with the CLI's default model and tokenizer names (for ``run``-like commands)."""
    from nanochat.core.plan import plan_run

    return plan_run(
        reg,
        stages,
        run_name,
        preset,
        overrides,
        model,
        tokenizer,
        loggers,
        device,
        defaults=DEFAULT_COMPONENTS,
    )


@cli.command("eval", context_settings={"show_default": True})
@click.argument("name")
@single_option("--run", "run_name", default="default", help="Run whose newest model to evaluate.")
@single_option(
    "--source",
    default=None,
    help="Stage whose newest checkpoint to evaluate (a name or unique prefix, e.g. sft, rl); "
    "default: the run's newest model.",
)
@component_options("eval-gsm8k.limit=50")
def eval_command(
    name: str,
    run_name: str,
    source: str | None,
    overrides: tuple[str, ...],
    model: str | None,
    tokenizer: str | None,
    loggers: tuple[str, ...],
    device: str,
) -> None:
    """Evaluate the newest model of a run with evaluator NAME and print its metrics (JSON)."""
    from nanochat.core.pipeline import run_eval

    reg = registry_module.get_registry()
    stages = (f"eval:{name}",)
    plan = cli_plan(reg, stages, run_name, None, overrides, model, tokenizer, loggers, device)
    # stdout carries the JSON result alone (for scripts); the console log goes to stderr
    plan.loggers = [
        (r, dataclasses.replace(o, stream="stderr") if r.qualified_name == CONSOLE else o)
        for r, o in plan.loggers
    ]
    with torchrun_runtime(device) as runtime:
        metrics = run_eval(plan, reg, runtime, source)
    if runtime is None or runtime.is_main:
        click.echo(json.dumps(metrics, indent=2, default=str))


def _add_commands() -> None:
    from nanochat.core.cli_models import chat_command, export_command, serve_command
    from nanochat.core.cli_report import report_command
    from nanochat.core.cli_speedrun import speedrun_command

    commands = (chat_command, serve_command, export_command, speedrun_command, report_command)
    for command in commands:
        cli.add_command(command)


_add_commands()


def build_cli(reg: Registry) -> click.Group:
    """The CLI group with every plugin's extra commands added.

    A plugin whose ``nanochat_register_commands`` raises is marked failed (its components are
    dropped too) and the commands it added are removed; strict mode raises.
    """
    for impl in reg.manager.hook.nanochat_register_commands.get_hookimpls():
        before = dict(cli.commands)
        try:
            impl.function(cli=cli)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - isolate a plugin's broken hook
            cli.commands.clear()
            cli.commands.update(before)
            reg.mark_failed(impl.plugin_name, exc, "nanochat_register_commands")
    return cli


def _report(exc: BaseException, debug: bool) -> int:
    if debug:
        raise exc
    if isinstance(exc, NanochatError):
        click.echo(f"Error: {exc}", err=True)
        return exc.exit_code
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    click.echo(
        f"Error: {type(exc).__name__}: {message} (run with --debug for the traceback)", err=True
    )
    return 1


def main(argv: Sequence[str] | None = None) -> None:
    """Console-script entry point: load plugins, add their commands, run, report errors."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _DEBUG_FLAG in args
    code = 0
    try:
        registry_module.configure(scan_plugin_options(args))
        group = build_cli(registry_module.get_registry())
        group.main(args=args, prog_name="nanochat", standalone_mode=False)
    except click.exceptions.Exit as exc:
        code = exc.exit_code
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except click.exceptions.Abort:
        click.echo("Aborted.", err=True)
        code = 130
    except KeyboardInterrupt:
        click.echo("Interrupted.", err=True)
        code = 130
    except UsageError as exc:
        code = _report(exc, debug)
    except Exception as exc:  # noqa: BLE001 - the top level turns errors into one line
        code = _report(exc, debug)
    sys.exit(code)

"""Declared option ranges, run names, repeated flags, and discoverable options (`show`)."""

from __future__ import annotations

import dataclasses
import json
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nanochat.core import cli
from nanochat.core import config as cfg
from nanochat.core import registry as registry_module
from nanochat.core.components import COMPONENT_KINDS, ComponentSpec, Preset
from nanochat.core.errors import UsageError
from nanochat.core.hookspecs import hookimpl
from nanochat.core.option_docs import (
    describe_options,
    docstring_attributes,
    field_docs,
    validate_plan,
)
from nanochat.core.plan import plan_run
from nanochat.core.plugins import create_plugin_manager
from nanochat.core.registry import Registry
from nanochat.plugins import builtin as builtin_plugin


def run_main(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``nanochat ARGS`` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        cli.main(args)
    out, err = capsys.readouterr()
    code = exit_info.value.code
    return (code if isinstance(code, int) else 1), out, err


def assert_usage_error(code: int, err: str, *needles: str) -> str:
    """A one-line ``Error: ...`` with exit code 2 and no traceback, containing ``needles``."""
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


# --- declared ranges, through the CLI --------------------------------------------------------

BAD_OPTIONS = [
    ("pretrain.max_steps=-3", "pretrain.max_steps", ">= 0"),
    ("pretrain.total_batch_tokens=-256", "pretrain.total_batch_tokens", ">= 0"),
    ("tokenizer.max_chars=0", "tokenizer.max_chars", ">= 1"),
    ("tokenizer.doc_cap=0", "tokenizer.doc_cap", ">= 1"),
    ("tokenizer.eval_chars=-1", "tokenizer.eval_chars", ">= 1"),
    ("pretrain.matrix_lr=nan", "pretrain.matrix_lr", "finite"),
    ("pretrain.embedding_lr=inf", "pretrain.embedding_lr", "finite"),
    ("pretrain.time_budget_s=-inf", "pretrain.time_budget_s", "finite"),
    ("pretrain.matrix_lr=-0.1", "pretrain.matrix_lr", ">= 0"),
    ("pretrain.warmdown_ratio=1.5", "pretrain.warmdown_ratio", "0 <= x <= 1"),
    ("pretrain.max_loss=0", "pretrain.max_loss", "> 0"),
    ("pretrain.eval_every=0", "pretrain.eval_every", ">= 1"),
    ("pretrain.keep_checkpoints=0", "pretrain.keep_checkpoints", ">= 1"),
    ("pretrain.device_batch_size=0", "pretrain.device_batch_size", "1 <= x <= 65536"),
    ("pretrain.doc_buffer=0", "pretrain.doc_buffer", ">= 1"),
    ("model.depth=0", "model.depth", "1 <= x <= 1024"),
    ("model.depth=100000000", "model.depth", "1 <= x <= 1024"),
    ("model.head_dim=0", "model.head_dim", "1 <= x <= 4096"),
    ("model.n_kv_head=-2", "model.n_kv_head", "1 <= x <= 4096"),
    ("model.sequence_len=0", "model.sequence_len", "1 <= x <= 1_048_576"),
    ("model.softcap=nan", "model.softcap", "finite"),
    ("tokenizer.vocab_size=100", "tokenizer.vocab_size", "265 <= x <= 16_777_216"),
    ("tokenizer.vocab_size=4294967296", "tokenizer.vocab_size", "265 <= x <= 16_777_216"),
    ("sft.overflow=clip", "sft.overflow", "one of: drop, truncate"),
    ("sft.device_batch_size=0", "sft.device_batch_size", "1 <= x <= 65536"),
    ("midtrain.epochs=-1", "midtrain.epochs", ">= 0"),
    ("eval-bpb.tokens=0", "eval-bpb.tokens", ">= 1"),
    ("console.every=0", "console.every", ">= 1"),
]


@pytest.mark.parametrize(("override", "name", "allowed"), BAD_OPTIONS)
def test_out_of_range_option_is_refused_before_anything_is_written(
    home: Path, capsys: pytest.CaptureFixture[str], override: str, name: str, allowed: str
) -> None:
    # Only eval:bpb runs, so that a value that slipped through fails fast instead of training;
    # options of stages outside the run are checked all the same.
    args = ["run", "eval:bpb", "--run", "r", "-o", override]
    code, _, err = run_main(args, capsys)
    value = override.split("=", 1)[1]
    line = assert_usage_error(code, err, f"option {name}=", allowed)
    assert value in line.split(f"{name}=", 1)[1].split()[0], line
    assert not (home / "runs").exists()


def test_in_run_stage_options_are_checked(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ["run", "tokenizer", "pretrain", "--preset", "tiny", "-o", "pretrain.max_steps=-3"]
    code, _, err = run_main(args, capsys)
    assert_usage_error(code, err, "option pretrain.max_steps=-3", ">= 0")
    args = ["run", "tokenizer", "-o", "tokenizer.doc_cap=0", "--run", "r"]
    code, _, err = run_main(args, capsys)
    assert_usage_error(code, err, "option tokenizer.doc_cap=0", ">= 1")
    assert not (home / "runs").exists()


def test_eval_checks_ranges_and_takes_log(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["eval", "bpb", "-o", "eval-bpb.device_batch_size=0"], capsys)
    assert_usage_error(code, err, "eval-bpb.device_batch_size=0", ">= 1")
    code, _, err = run_main(["eval", "bpb", "--log", "no-such-logger"], capsys)
    assert_usage_error(code, err, "no-such-logger")
    code, _, err = run_main(["eval", "bpb", "--log", "wandb", "-o", "wandb.mode=loud"], capsys)
    assert_usage_error(code, err, "wandb.mode='loud'", "one of: '', online, offline, disabled")
    assert not (home / "runs").exists()


# --- run names ---------------------------------------------------------------------------------

BAD_RUN_NAMES = ["a b", "a\nb", "~", "~x", "a*", "a\\b", "a/b", "..", ".", ".hidden", "", "x" * 101]


@pytest.mark.parametrize("run_name", BAD_RUN_NAMES)
def test_bad_run_name_is_refused(
    home: Path, capsys: pytest.CaptureFixture[str], run_name: str
) -> None:
    code, _, err = run_main(["run", "eval:bpb", "--run", run_name], capsys)
    assert_usage_error(code, err, "invalid run name", "letters, digits", "at most 100")
    assert not (home / "runs").exists()
    with pytest.raises(UsageError):
        cfg.check_run_name(run_name)


@pytest.mark.parametrize("run_name", ["demo", "d12.v2", "a-b_c", "X9", "x" * 100])
def test_good_run_names_pass(run_name: str) -> None:
    assert cfg.check_run_name(run_name) == run_name


# --- repeated single-valued flags --------------------------------------------------------------

REPEATED = [
    (["run", "eval:bpb", "--run", "x", "--run", "y"], "--run given twice"),
    (["run", "eval:bpb", "--preset", "tiny", "--preset", "d12"], "--preset given twice"),
    (["run", "eval:bpb", "--model", "gpt", "--model", "gpt"], "--model given twice"),
    (["run", "eval:bpb", "--tokenizer", "a", "--tokenizer", "b"], "--tokenizer given twice"),
    (["run", "eval:bpb", "--device", "cpu", "--device", "cpu"], "--device given twice"),
    (["run", "eval:bpb", "--run", "x", "--run", "y", "--run", "z"], "--run given 3 times"),
    (["eval", "bpb", "--run", "x", "--run", "y"], "--run given twice"),
]


@pytest.mark.parametrize(("args", "message"), REPEATED)
def test_repeated_single_valued_flag_is_an_error(
    home: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, _, err = run_main(args, capsys)
    assert_usage_error(code, err, message)
    assert not (home / "runs").exists()


# --- show and list presets -v ------------------------------------------------------------------


def _option_lines(out: str) -> dict[str, str]:
    """Option name to its line in `show` output (lines indented by four, after `options`)."""
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  options ("))
    rows = {}
    for line in lines[start + 1 :]:
        if line.startswith("    ") and not line.startswith("     "):
            rows[line.split()[0]] = line
    return rows


def test_show_stage_pretrain_lists_every_field(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from nanochat_stages.options import PretrainOptions

    code, out, err = run_main(["show", "stage", "pretrain"], capsys)
    assert code == 0, err
    assert "nanochat-stages/pretrain" in out and "factory: nanochat_stages." in out
    assert "-o pretrain.KEY=VALUE" in out
    rows = _option_lines(out)
    hints = typing.get_type_hints(PretrainOptions)
    defaults = PretrainOptions()
    assert set(rows) == {f.name for f in dataclasses.fields(PretrainOptions)}
    for f in dataclasses.fields(PretrainOptions):
        line = rows[f.name]
        assert f" {hints[f.name].__name__} " in line, line
        assert f"= {getattr(defaults, f.name)!r}" in line, line
    assert "[>= 0]" in rows["max_steps"] and "[0 <= x <= 1]" in rows["warmup_ratio"]


def _registered_components() -> list[tuple[str, str, str]]:
    registry_module.configure([])
    reg = registry_module.get_registry()
    builtin = {p.name for p in reg.plugins if p.builtin}
    return [
        (kind, item.qualified_name, item.plugin)
        for kind in COMPONENT_KINDS
        for item in reg.components(kind)
        if item.plugin in builtin
    ]


def _is_numeric(tp: typing.Any) -> bool:
    args = typing.get_args(tp) if typing.get_origin(tp) is not None else (tp,)
    return any(a in (int, float) for a in args)


def test_show_covers_every_field_of_every_component(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    components = _registered_components()
    kinds = {kind for kind, _, _ in components}
    assert {"model", "tokenizer", "dataset", "stage", "eval", "logger"} <= kinds
    reg = registry_module.get_registry()
    for kind, qualified, _ in components:
        code, out, err = run_main(["show", kind, qualified, "--json"], capsys)
        assert code == 0, err
        info = json.loads(out)
        options_type = reg.resolve(kind, qualified).spec.options
        fields = {f.name: f for f in dataclasses.fields(options_type)}
        hints = typing.get_type_hints(options_type)
        shown = {o["name"]: o for o in info["options"]}
        assert list(shown) == list(fields), qualified
        for name, row in shown.items():
            where = f"{qualified}.{name}"
            assert row["doc"].strip(), f"{where} has no doc"
            if _is_numeric(hints[name]) and hints[name] is not bool:
                assert row["range"], f"{where} declares no range"
            assert row["range"] == cfg.option_spec(options_type, name).describe()
        assert info["factory"] == reg.resolve(kind, qualified).spec.factory
        # Every default passes its own declared range.
        cfg.validate_options(options_type(), qualified)


def test_show_unknown_component_is_a_usage_error(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_main(["show", "stage", "pretrian"], capsys)
    assert_usage_error(code, err, "pretrain")
    code, _, err = run_main(["show", "gizmo", "x"], capsys)
    assert_usage_error(code, err, "gizmo")


def test_list_presets_verbose_shows_what_each_sets(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run_main(["list", "presets", "-v"], capsys)
    assert code == 0, err
    reg = registry_module.get_registry()
    presets = reg.presets()
    assert "tiny" in presets
    for name, (_, preset) in presets.items():
        block = out.split(f"\n{name} ", 1)[-1] if not out.startswith(f"{name} ") else out
        for target, value in preset.overrides.items():
            assert f"    {target} = {value!r}" in block, (name, target)
    code, out, _ = run_main(["list", "presets"], capsys)
    assert code == 0 and "pretrain.max_steps" not in out
    code, out, _ = run_main(["show", "preset", "tiny"], capsys)
    assert code == 0 and "    pretrain.max_steps = 200" not in out
    assert "  pretrain.max_steps = 200" in out


# --- the option() helper and validate_options, for third-party options ------------------------


@dataclass
class ThirdPartyOptions:
    """Options of a plugin outside nanochat.

    Attributes:
        steps: how many steps
            to take (a continuation line).
        ratio: documented here and in the field; the field wins.
        raw: no declared range, so only finiteness is checked.
    """

    steps: int = cfg.option(10, ge=1)
    ratio: float = cfg.option(0.5, gt=0, lt=1, doc="the field's own doc")
    raw: float = 0.0
    mode: str = cfg.option("a", choices=("a", "b"), doc="a or b")
    sizes: list[int] = cfg.option(default_factory=lambda: [1, 2], ge=1, doc="each >= 1")
    limit: float | None = cfg.option(None, ge=0, allow_nonfinite=True, doc="inf allowed")
    untouched: list[str] = field(default_factory=list)


def test_option_declares_and_validate_options_enforces() -> None:
    cfg.validate_options(ThirdPartyOptions(), "tp")
    cfg.validate_options(ThirdPartyOptions(limit=math.inf, sizes=[3]), "tp")
    bad = [
        (ThirdPartyOptions(steps=0), "option tp.steps=0 is out of range: expected >= 1"),
        (ThirdPartyOptions(ratio=1.0), "tp.ratio=1.0 is out of range: expected 0 < x < 1"),
        (ThirdPartyOptions(raw=math.nan), "tp.raw=nan is not allowed: expected a finite number"),
        (ThirdPartyOptions(mode="c"), "tp.mode='c' is not allowed: expected one of: a, b"),
        (ThirdPartyOptions(sizes=[1, 0]), "tp.sizes=0 is out of range"),
        (ThirdPartyOptions(limit=-1.0), "tp.limit=-1.0 is out of range: expected >= 0"),
    ]
    for options, message in bad:
        with pytest.raises(UsageError) as err:
            cfg.validate_options(options, "tp")
        assert message in str(err.value)
        assert "\n" not in str(err.value)


def test_option_field_behaves_like_a_dataclass_field() -> None:
    a, b = ThirdPartyOptions(), ThirdPartyOptions()
    assert a.sizes == [1, 2] and a.sizes is not b.sizes
    changed = cfg.apply_overrides(a, {"steps": "7", "ratio": "0.25"}, "tp")
    assert (changed.steps, changed.ratio) == (7, 0.25)
    assert cfg.option_spec(ThirdPartyOptions, "raw") == cfg.OptionSpec()
    with pytest.raises(ValueError):
        cfg.option(1, default_factory=list)


def test_docs_come_from_metadata_then_docstring() -> None:
    docs = field_docs(ThirdPartyOptions)
    assert docs["steps"] == "how many steps to take (a continuation line)."
    assert docs["ratio"] == "the field's own doc"
    assert docs["raw"] == "no declared range, so only finiteness is checked."
    assert docs["untouched"] == ""
    rows = {r["name"]: r for r in describe_options(ThirdPartyOptions)}
    assert rows["sizes"]["type"] == "list[int]" and rows["sizes"]["default"] == [1, 2]
    assert rows["limit"]["type"] == "float | None" and rows["limit"]["range"] == ">= 0"
    assert rows["raw"]["range"] == ""
    assert docstring_attributes("No sections.") == {}
    assert docstring_attributes("X.\n\nAttributes:\n    a: one.\n\nReturns:\n    b: no.") == {
        "a": "one."
    }


def test_inherited_docs_come_from_the_base_class() -> None:
    @dataclass
    class Child(ThirdPartyOptions):
        """A child without an Attributes section for ``steps``.

        Attributes:
            extra: the child's own field.
        """

        extra: int = cfg.option(3, ge=0)

    docs = field_docs(Child)
    assert docs["extra"] == "the child's own field."
    assert docs["steps"] == "how many steps to take (a continuation line)."


@dataclass
class BadDefaultOptions:
    """A plugin whose default breaks its own declared range."""

    size: int = cfg.option(0, ge=1, doc="must be positive, but the default is not")


class _ThirdPartyStage:
    def __init__(self, options: ThirdPartyOptions):
        self.options = options


class _ThirdPartyPlugin:
    @hookimpl
    def nanochat_register_stages(self) -> list[ComponentSpec]:
        factory = f"{__name__}:_ThirdPartyStage"
        return [
            ComponentSpec("stage", "tp", factory, "tp", ThirdPartyOptions),
            ComponentSpec("stage", "bad-default", factory, "bad", BadDefaultOptions),
        ]

    @hookimpl
    def nanochat_register_presets(self) -> list[Preset]:
        return [Preset("tp-bad", "a preset with a bad value", overrides={"tp.steps": 0})]


def test_validate_plan_checks_third_party_options_and_presets() -> None:
    reg = Registry(create_plugin_manager(), [])
    reg.register(builtin_plugin, "nanochat")  # loggers, model and tokenizers
    reg.register(_ThirdPartyPlugin(), "third")
    validate_plan(plan_run(reg, ["tp"], "ok"))
    with pytest.raises(UsageError, match=r"option tp\.ratio=2\.0 is out of range"):
        validate_plan(plan_run(reg, ["tp"], "ok", overrides=["tp.ratio=2"]))
    with pytest.raises(UsageError, match=r"option tp\.steps=0 is out of range: expected >= 1"):
        validate_plan(plan_run(reg, ["tp"], "ok", preset="tp-bad"))
    with pytest.raises(UsageError, match="invalid run name"):
        validate_plan(plan_run(reg, ["tp"], "bad name"))
    # A bad default is no override: only the final check of the plan (in plan_run) sees it.
    with pytest.raises(UsageError, match=r"option bad-default\.size=0 is out of range"):
        plan_run(reg, ["bad-default"], "ok")
    validate_plan(plan_run(reg, ["bad-default"], "ok", overrides=["bad-default.size=2"]))
    with pytest.raises(UsageError, match=r"option model\.depth=0 is out of range"):
        # two built-in models (gpt, llama): the run names one
        validate_plan(plan_run(reg, ["tp"], "ok", overrides=["model.depth=0"], model="gpt"))


def test_cli_checks_final_options_of_a_third_party_plugin(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    load = Registry.load.__func__

    def load_with_third_party(cls: type[Registry], plugin_options: typing.Any = ()) -> Registry:
        reg = load(cls, plugin_options)
        reg.register(_ThirdPartyPlugin(), "third")
        return reg

    monkeypatch.setattr(Registry, "load", classmethod(load_with_third_party))
    # Put back the process-wide registry of before this test when it ends.
    monkeypatch.setattr(registry_module, "_current", None)
    # The bad default is caught by the final check before the run folder exists.
    code, _, err = run_main(["run", "bad-default", "--run", "r"], capsys)
    assert_usage_error(code, err, "option bad-default.size=0", ">= 1")
    code, _, err = run_main(["run", "tp", "--preset", "tp-bad"], capsys)
    assert_usage_error(code, err, "option tp.steps=0", ">= 1")
    assert not (home / "runs").exists()
    code, out, err = run_main(["show", "stage", "tp"], capsys)
    assert code == 0, err
    rows = _option_lines(out)
    assert list(rows) == [f.name for f in dataclasses.fields(ThirdPartyOptions)]
    assert "[0 < x < 1]" in rows["ratio"] and "[one of: a, b]" in rows["mode"]
    assert "the field's own doc" in out and "third" in out

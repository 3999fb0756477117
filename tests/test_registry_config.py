"""Name resolution, plugins registered in code, overrides and presets."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from nanochat.core import config as cfg
from nanochat.core.components import ComponentSpec, Preset
from nanochat.core.errors import AmbiguousComponentError, UnknownComponentError, UsageError
from nanochat.core.hookspecs import hookimpl
from nanochat.core.plan import plan_run
from nanochat.core.plugins import create_plugin_manager
from nanochat.core.registry import Registry


@dataclass
class TrainOptions:
    steps: int = 10
    lr: float = 0.02
    name: str = "x"
    compile: bool = False
    mixture: list[str] | None = None
    depth: int | None = None


class Run:
    def __init__(self, options: TrainOptions):
        self.options = options

    def run(self, ctx):  # pragma: no cover - resolved, not run, in these tests
        return {}


class AlphaPlugin:
    @hookimpl
    def nanochat_register_stages(self):
        return [
            ComponentSpec("stage", "pretrain", f"{__name__}:Run", "train", TrainOptions),
            ComponentSpec("stage", "shared", f"{__name__}:Run", "alpha's", TrainOptions),
        ]

    @hookimpl
    def nanochat_register_presets(self):
        return [Preset("quick", "fewer steps", overrides={"pretrain.steps": 3, "other.x": 1})]


class BetaPlugin:
    @hookimpl
    def nanochat_register_stages(self):
        return [ComponentSpec("stage", "shared", f"{__name__}:Run", "beta's", TrainOptions)]


@pytest.fixture
def registry() -> Registry:
    reg = Registry(create_plugin_manager(), [])
    reg.register(AlphaPlugin(), "alpha")
    reg.register(BetaPlugin(), "beta")
    return reg


def test_short_and_qualified_names(registry: Registry) -> None:
    assert registry.resolve("stage", "pretrain").qualified_name == "alpha/pretrain"
    assert registry.resolve("stages", "alpha/pretrain").spec.name == "pretrain"
    assert registry.resolve("stage", "beta/shared").plugin == "beta"
    assert registry.resolve("stage", "alpha/shared").plugin == "alpha"


def test_ambiguous_short_name_names_both(registry: Registry) -> None:
    with pytest.raises(AmbiguousComponentError) as err:
        registry.resolve("stage", "shared")
    assert "alpha/shared" in str(err.value) and "beta/shared" in str(err.value)
    assert registry.ambiguous_names("stage") == {"shared": ["alpha", "beta"]}


def test_unknown_name_lists_close_matches(registry: Registry) -> None:
    with pytest.raises(UnknownComponentError) as err:
        registry.resolve("stage", "pretrian")
    message = str(err.value)
    assert "did you mean: pretrain" in message
    assert "nanochat list stages" in message
    assert "\n" not in message


def test_unregister_removes_components(registry: Registry) -> None:
    registry.unregister("beta")
    assert registry.resolve("stage", "shared").plugin == "alpha"
    with registry.temporary_plugin(BetaPlugin(), "beta2"), pytest.raises(AmbiguousComponentError):
        registry.resolve("stage", "shared")
    assert registry.resolve("stage", "shared").plugin == "alpha"


def test_spec_validation() -> None:
    with pytest.raises(ValueError):
        ComponentSpec("widget", "x", "m:a")
    with pytest.raises(ValueError):
        ComponentSpec("stage", "a/b", "m:a")
    with pytest.raises(ValueError):
        ComponentSpec("stage", "x", "no_colon")


@pytest.mark.parametrize(
    ("key", "raw", "expected"),
    [
        ("steps", "100", 100),
        ("steps", "1e3", 1000),
        ("lr", "3e-4", 3e-4),
        ("name", "abc", "abc"),
        ("compile", "true", True),
        ("compile", "off", False),
        ("mixture", "a:1,b:2", ["a:1", "b:2"]),
        ("mixture", "none", None),
        ("depth", "12", 12),
        ("depth", "null", None),
    ],
)
def test_overrides_convert_types(key: str, raw: str, expected: object) -> None:
    options = cfg.apply_overrides(TrainOptions(), {key: raw}, "pretrain")
    assert getattr(options, key) == expected


@pytest.mark.parametrize(
    ("key", "raw", "needle"),
    [
        ("steps", "abc", "expected int"),
        ("steps", "1.5", "expected int"),
        ("lr", "fast", "expected float"),
        ("compile", "maybe", "expected bool"),
        ("depth", "deep", "expected int or NoneType"),
        ("stepz", "1", "did you mean: steps"),
    ],
)
def test_bad_overrides_fail_with_one_line(key: str, raw: str, needle: str) -> None:
    with pytest.raises(UsageError) as err:
        cfg.apply_overrides(TrainOptions(), {key: raw}, "pretrain")
    assert needle in str(err.value)
    assert "\n" not in str(err.value)


def test_parse_override_rejects_malformed() -> None:
    assert cfg.parse_override("pretrain.steps=5") == ("pretrain", "steps", "5")
    assert cfg.parse_override("a.b=c=d") == ("a", "b", "c=d")
    for bad in ("steps=5", "pretrain.steps", ".x=1", "x.=1"):
        with pytest.raises(UsageError):
            cfg.parse_override(bad)


def test_plan_applies_preset_then_overrides(registry: Registry) -> None:
    registry.register(_LoggerPlugin(), "loggers")
    plan = plan_run(registry, ["pretrain"], "r", preset="quick", overrides=["pretrain.lr=0.5"])
    assert plan.stages[0].options.steps == 3
    assert plan.stages[0].options.lr == 0.5
    plan = plan_run(registry, ["pretrain"], "r", preset="quick", overrides=["pretrain.steps=7"])
    assert plan.stages[0].options.steps == 7
    with pytest.raises(UsageError, match="unknown preset 'slow'; known presets: quick"):
        plan_run(registry, ["pretrain"], "r", preset="slow")
    with pytest.raises(UsageError, match="'pretrian' is not part of this run"):
        plan_run(registry, ["pretrain"], "r", overrides=["pretrian.steps=1"])
    with pytest.raises(UsageError, match="appears twice"):
        plan_run(registry, ["pretrain", "alpha/pretrain"], "r")


@dataclass
class _NoOpts:
    pass


class _LoggerPlugin:
    @hookimpl
    def nanochat_register_loggers(self):
        return [
            ComponentSpec("logger", "console", "builtins:dict", "", _NoOpts),
            ComponentSpec("logger", "jsonl", "builtins:dict", "", _NoOpts),
        ]


def test_an_eval_twice_in_a_pipeline_gets_the_same_options(home) -> None:
    registry = Registry.load()
    plan = plan_run(
        registry,
        ["tokenizer", "pretrain", "eval:bpb", "sft", "eval:bpb"],
        "twice",
        preset="tiny",
        overrides=["eval-bpb.tokens=4096"],
        defaults={"model": "gpt", "tokenizer": "rustbpe"},
    )
    evals = [e for e in plan.stages if e.kind == "eval"]
    assert [e.options.tokens for e in evals] == [4096, 4096]

"""Every hook is documented, and every registration hook feeds the registry."""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import click
import pytest
from click.testing import CliRunner

from nanochat.core import hookspecs
from nanochat.core.components import ComponentSpec, Preset
from nanochat.core.hookspecs import hookimpl
from nanochat.core.plugins import create_plugin_manager
from nanochat.core.registry import REGISTRATION_HOOKS, Registry

ALL_HOOKS = sorted(
    name
    for name, obj in vars(hookspecs).items()
    if name.startswith("nanochat_") and inspect.isfunction(obj)
)


@dataclass
class EchoOptions:
    word: str = "echo"


class Echo:
    """A component of any kind that remembers its options."""

    def __init__(self, options: EchoOptions):
        self.options = options


class EveryKindPlugin:
    """Registers one component of every kind, a preset and a command."""

    def _spec(self, kind: str) -> list[ComponentSpec]:
        return [ComponentSpec(kind, f"echo-{kind}", f"{__name__}:Echo", f"a {kind}", EchoOptions)]

    @hookimpl
    def nanochat_register_models(self):
        return self._spec("model")

    @hookimpl
    def nanochat_register_tokenizers(self):
        return self._spec("tokenizer")

    @hookimpl
    def nanochat_register_datasets(self):
        return self._spec("dataset")

    @hookimpl
    def nanochat_register_stages(self):
        return self._spec("stage")

    @hookimpl
    def nanochat_register_evals(self):
        return self._spec("eval")

    @hookimpl
    def nanochat_register_servers(self):
        return self._spec("server")

    @hookimpl
    def nanochat_register_tools(self):
        return self._spec("tool")

    @hookimpl
    def nanochat_register_loggers(self):
        return self._spec("logger")

    @hookimpl
    def nanochat_register_templates(self):
        return self._spec("template")

    @hookimpl
    def nanochat_register_presets(self):
        return [Preset("echo-preset", "loud", overrides={"echo-stage.word": "ECHO"})]

    @hookimpl
    def nanochat_register_commands(self, cli: click.Group):
        @cli.command("echo")
        def echo() -> None:
            click.echo("echoed")


@pytest.mark.parametrize("name", ALL_HOOKS)
def test_every_hook_is_prefixed_and_documented(name: str) -> None:
    spec = getattr(hookspecs, name)
    assert spec.__doc__ and len(spec.__doc__.strip()) > 30
    assert "return" in inspect.getsource(spec).split('"""')[0] or spec.__annotations__


def test_hook_list_is_complete() -> None:
    expected = {
        *REGISTRATION_HOOKS.values(),
        "nanochat_register_presets",
        "nanochat_register_commands",
        "nanochat_stage_start",
        "nanochat_stage_end",
        "nanochat_metrics",
    }
    assert set(ALL_HOOKS) == expected


@pytest.mark.parametrize("kind", sorted(REGISTRATION_HOOKS))
def test_registration_hook_feeds_registry(kind: str) -> None:
    registry = Registry(create_plugin_manager(), [])
    registry.register(EveryKindPlugin(), "every")
    resolved = registry.resolve(kind, f"every/echo-{kind}")
    assert resolved.spec.summary == f"a {kind}"
    component = registry.create(kind, f"echo-{kind}")
    assert isinstance(component, Echo) and component.options.word == "echo"
    info = registry.plugin_info("every")
    assert f"{kind}:echo-{kind}" in info.components
    assert REGISTRATION_HOOKS[kind] in info.hooks


def test_presets_and_commands_hooks() -> None:
    registry = Registry(create_plugin_manager(), [])
    registry.register(EveryKindPlugin(), "every")
    assert registry.preset("echo-preset").overrides == {"echo-stage.word": "ECHO"}

    @click.group()
    def group() -> None:
        pass

    registry.manager.hook.nanochat_register_commands(cli=group)
    result = CliRunner().invoke(group, ["echo"])
    assert result.output == "echoed\n"

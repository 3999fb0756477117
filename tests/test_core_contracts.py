"""Structure and rules of the core: the import graph, hook names, the precedence rule for names
given by several plugins, and the append-only run record."""

from __future__ import annotations

import ast
import inspect
import json
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import REPO, run_cli

from nanochat.core import hookspecs
from nanochat.core.components import ComponentSpec, Preset
from nanochat.core.errors import AmbiguousComponentError
from nanochat.core.hookspecs import hookimpl
from nanochat.core.plan import plan_run
from nanochat.core.registry import Registry

PLUGIN_PACKAGES = {"nanochat_stages", "nanochat_datasets", "nanochat_evals"}


def module_imports(path: Path, package: str) -> list[tuple[str, bool]]:
    """``(imported module, at module level)`` for every import in ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    found: list[tuple[str, bool]] = []
    type_checking = {
        id(node)
        for block in ast.walk(tree)
        if isinstance(block, ast.If) and "TYPE_CHECKING" in ast.unparse(block.test)
        for node in ast.walk(block)
    }
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names = [f"{base}.{node.module}" if node.module else base]
            else:
                names = [node.module or ""]
        else:
            continue
        at_top = id(node) in top_level and id(node) not in type_checking
        found += [(name, at_top) for name in names]
    return found


def python_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*.py") if ".venv" not in p.parts]


def test_core_imports_no_plugin() -> None:
    for path in python_files(REPO / "nanochat" / "core"):
        for name, _ in module_imports(path, "nanochat.core"):
            top = name.split(".")[0]
            assert not name.startswith("nanochat.plugins"), (path, name)
            assert top not in PLUGIN_PACKAGES, (path, name)


def test_plugin_distributions_use_only_public_core_modules() -> None:
    for path in python_files(REPO / "plugins"):
        for name, _ in module_imports(path, path.parent.name):
            assert not name.startswith("nanochat.plugins"), (path, name)


def test_no_module_level_import_cycles() -> None:
    """Within each distribution, module-level imports form no cycle."""
    roots = {
        "nanochat": REPO / "nanochat",
        "nanochat_stages": REPO / "plugins" / "stages" / "nanochat_stages",
        "nanochat_evals": REPO / "plugins" / "evals" / "nanochat_evals",
        "nanochat_datasets": REPO / "plugins" / "datasets" / "nanochat_datasets",
    }
    graph: dict[str, set[str]] = {}
    for package, root in roots.items():
        for path in python_files(root):
            rel = path.relative_to(root).with_suffix("")
            parts = [package, *rel.parts]
            if parts[-1] == "__init__":
                parts = parts[:-1]
            module = ".".join(parts)
            pkg = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
            graph[module] = {n for n, top in module_imports(path, pkg) if top}
    for module in graph:
        graph[module] = {n for n in graph[module] if n in graph and n != module}

    visiting: list[str] = []
    done: set[str] = set()

    def visit(module: str) -> None:
        if module in done:
            return
        assert module not in visiting, f"import cycle: {' -> '.join([*visiting, module])}"
        visiting.append(module)
        for dependency in sorted(graph[module]):
            visit(dependency)
        visiting.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_hook_names_list_every_hookspec() -> None:
    specs = {
        name
        for name, obj in vars(hookspecs).items()
        if name.startswith("nanochat_") and inspect.isfunction(obj)
    }
    assert set(hookspecs.HOOK_NAMES) == specs


@dataclass
class _Opts:
    steps: int = 1


class _Stage:
    def __init__(self, options: _Opts) -> None:
        self.options = options


class _FirstPlugin:
    @hookimpl
    def nanochat_register_stages(self):
        return [ComponentSpec("stage", "train", f"{__name__}:_Stage", "first", _Opts)]

    @hookimpl
    def nanochat_register_presets(self):
        return [Preset("tiny", "a third party's tiny", overrides={"train.steps": 9})]


class _SecondPlugin:
    @hookimpl
    def nanochat_register_stages(self):
        return [ComponentSpec("stage", "train", f"{__name__}:_Stage", "second", _Opts)]


def test_a_built_in_preset_is_never_silently_shadowed() -> None:
    registry = Registry.load()
    builtin_tiny = registry.preset("tiny")
    with registry.temporary_plugin(_FirstPlugin(), "third-party"):
        with pytest.raises(AmbiguousComponentError) as err:
            registry.preset("tiny")
        assert "nanochat-stages/tiny and third-party/tiny" in str(err.value)
        assert registry.preset("nanochat-stages/tiny") == builtin_tiny
        assert registry.preset("third-party/tiny").overrides == {"train.steps": 9}
        assert {"nanochat-stages/tiny", "third-party/tiny"} <= set(registry.presets())
    assert registry.preset("tiny") == builtin_tiny


def test_two_stages_of_one_short_name_get_their_own_folder_and_scope() -> None:
    registry = Registry.load()
    registry.register(_FirstPlugin(), "first")
    registry.register(_SecondPlugin(), "second")
    plan = plan_run(
        registry,
        ["first/train", "second/train"],
        "scopes",
        overrides=["first--train.steps=3", "second/train.steps=4"],
    )
    assert [e.scope for e in plan.stages] == ["first--train", "second--train"]
    assert [e.options.steps for e in plan.stages] == [3, 4]
    with pytest.raises(AmbiguousComponentError, match="first/train and second/train"):
        plan_run(registry, ["train"], "scopes")


def test_run_record_is_append_only(home: Path, plugin_sites) -> None:
    sites = [plugin_sites["hello"]]
    first = run_cli(
        ["run", "hello", "--run", "rec", "--preset", "hello-fast", "-o", "hello.greeting=hey"],
        home,
        sites,
    )
    assert first.returncode == 0, first.stderr
    second = run_cli(["run", "count", "--run", "rec", "-o", "count.sleep=0.01"], home, sites)
    assert second.returncode == 0, second.stderr
    record = json.loads((home / "runs" / "rec" / "pipeline.json").read_text())
    assert record["preset"] == "hello-fast"  # the partial later run kept the preset
    assert record["overrides"] == ["hello.greeting=hey", "count.sleep=0.01"]
    stages = {s["name"]: s for s in record["stages"]}
    assert set(stages) == {"hello", "count"}
    assert stages["hello"]["options"] == {"greeting": "hey", "times": 1}
    assert stages["count"]["options"] == {"steps": 3, "sleep": 0.01}  # preset applied too
    assert [c["labels"] for c in record["commands"]] == [["hello"], ["count"]]
    assert record["plugins"]["nanochat-hello"]["version"] == "0.3.1"
    assert record["created"] <= record["updated"]


def test_datasets_take_options_through_o(tmp_path: Path) -> None:
    """`-o text-files.KEY=VALUE` reaches every use of that dataset in the run."""
    from nanochat.core.data_refs import open_dataset
    from nanochat.core.errors import UsageError

    corpus = tmp_path / "docs.txt"
    corpus.write_text("\n\n".join(f"document number {i}" for i in range(200)))
    registry = Registry.load()
    plan = plan_run(
        registry,
        ["tokenizer"],
        "ds",
        overrides=[
            f"text-files.path={corpus}",
            "text-files.txt_mode=paragraph",
            "nanochat-datasets/text-files.val_fraction=0.5",
        ],
    )
    options = plan.dataset_options["nanochat-datasets/text-files"]
    assert (options.path, options.txt_mode, options.val_fraction) == (str(corpus), "paragraph", 0.5)
    dataset = open_dataset("text-files", registry, dataset_options=plan.dataset_options)
    val = sum(1 for _ in dataset.iter("val", shuffle=False))
    train = sum(1 for _ in dataset.iter("train", shuffle=False))
    assert val + train == 200 and 60 < val < 140
    assert (
        plan.describe(registry)["datasets"]["nanochat-datasets/text-files"]["val_fraction"] == 0.5
    )
    with pytest.raises(UsageError, match=r"text-files\.val_fraction=2\.0 is out of range"):
        plan_run(registry, ["tokenizer"], "ds", overrides=["text-files.val_fraction=2"])
    with pytest.raises(UsageError, match="unknown option text-files.nope"):
        plan_run(registry, ["tokenizer"], "ds", overrides=["text-files.nope=1"])


def test_a_dataset_option_can_be_given_for_one_stage() -> None:
    """`-o rl.arithmetic.max_value=300` changes `arithmetic` for rl only, on top of the run-wide
    `-o arithmetic.*`; the other stages and evals keep the run-wide options."""
    from nanochat.core.errors import UsageError

    registry = Registry.load()
    plan = plan_run(
        registry,
        ["sft", "rl", "eval:gsm8k"],
        "ds",
        overrides=[
            "arithmetic.max_steps=2",
            "arithmetic.max_value=50",
            "rl.arithmetic.max_value=300",
            "eval:nanochat-evals/gsm8k.nanochat-datasets/arithmetic.seed=7",
        ],
    )
    name = "nanochat-datasets/arithmetic"
    for scope in ("sft", "eval-gsm8k", "rl"):
        options = plan.datasets_for(scope)[name]
        expected = (2, 300 if scope == "rl" else 50, 7 if scope == "eval-gsm8k" else 1234)
        assert (options.max_steps, options.max_value, options.seed) == expected, scope
    assert plan.describe(registry)["stage_datasets"]["rl"][name]["max_value"] == 300
    with pytest.raises(UsageError, match=r"rl\.arithmetic\.max_value=1 is out of range"):
        plan_run(registry, ["rl"], "ds", overrides=["rl.arithmetic.max_value=1"])
    with pytest.raises(UsageError, match="unknown option rl.arithmetic.nope"):
        plan_run(registry, ["rl"], "ds", overrides=["rl.arithmetic.nope=1"])
    with pytest.raises(
        UsageError, match="no dataset is named 'arithmetc'; did you mean: arithmetic"
    ):
        plan_run(registry, ["rl"], "ds", overrides=["rl.arithmetc.max_value=300"])
    with pytest.raises(UsageError, match="'model' is neither"):
        plan_run(registry, ["rl"], "ds", overrides=["model.arithmetic.max_value=300"])

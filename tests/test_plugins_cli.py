"""Plugin discovery through entry points, seen from the real CLI in subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import cli_env, run_cli

BUILTINS = {"nanochat"}


def plugins_json(home: Path, sites: list[Path], *args: str, **env: str) -> list[dict]:
    result = run_cli(["plugins", "--json", *args], home, sites, **env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def by_name(rows: list[dict]) -> dict[str, dict]:
    return {row["name"]: row for row in rows}


def test_builtin_plugins_are_loaded(home: Path) -> None:
    rows = by_name(plugins_json(home, []))
    assert set(rows) >= BUILTINS
    for name in BUILTINS:
        row = rows[name]
        assert row["status"] == "loaded"
        assert row["builtin"] is True
        assert row["version"]
        assert "logger:jsonl" in row["components"]
        assert set(row) >= {
            "name",
            "distribution",
            "version",
            "builtin",
            "status",
            "hooks",
            "components",
            "error",
        }
    for row in rows.values():
        if row["builtin"]:
            assert row["status"] == "loaded", row


def test_third_party_plugin_is_listed_with_version(home: Path, plugin_sites) -> None:
    rows = by_name(plugins_json(home, [plugin_sites["hello"]]))
    hello = rows["nanochat-hello"]
    assert hello["status"] == "loaded"
    assert hello["version"] == "0.3.1"
    assert hello["distribution"] == "nanochat-hello"
    assert hello["builtin"] is False
    assert {"stage:hello", "stage:count", "eval:hello-eval"} <= set(hello["components"])
    assert "nanochat_register_stages" in hello["hooks"]
    text = run_cli(["plugins"], home, [plugin_sites["hello"]])
    assert "nanochat-hello 0.3.1 [loaded]" in text.stdout


def test_third_party_stage_runs_and_writes_into_run_dir(home: Path, plugin_sites) -> None:
    result = run_cli(
        ["run", "hello", "--run", "t", "-o", "hello.greeting=hi"], home, [plugin_sites["hello"]]
    )
    assert result.returncode == 0, result.stderr
    run_dir = home / "runs" / "t"
    assert (run_dir / "hello" / "hello.txt").read_text() == "hi\n"
    assert (run_dir / "hello" / "done.json").is_file()
    assert (run_dir / "metrics.jsonl").is_file()


def test_third_party_eval_runs_as_a_stage(home: Path, plugin_sites) -> None:
    result = run_cli(
        [
            "run",
            "hello",
            "eval:hello-eval",
            "--run",
            "e",
            "-o",
            "hello.times=2",
            "-o",
            "eval-hello-eval.bonus=0.5",
        ],
        home,
        [plugin_sites["hello"]],
    )
    assert result.returncode == 0, result.stderr
    done = json.loads((home / "runs" / "e" / "eval-hello-eval" / "done.json").read_text())
    assert done["result"] == {"greeting_length": len("hello hello") + 0.5}


def test_disable_autoload_and_block_keep_it_out(home: Path, plugin_sites) -> None:
    sites = [plugin_sites["hello"]]
    rows = by_name(plugins_json(home, sites, "--all", NANOCHAT_DISABLE_PLUGIN_AUTOLOAD="1"))
    assert rows["nanochat-hello"]["status"] == "not-loaded"
    assert rows["nanochat"]["status"] == "loaded"
    assert "nanochat-hello" not in by_name(
        plugins_json(home, sites, NANOCHAT_DISABLE_PLUGIN_AUTOLOAD="1")
    )
    blocked = run_cli(["-p", "no:nanochat-hello", "plugins", "--json", "--all"], home, sites)
    assert by_name(json.loads(blocked.stdout))["nanochat-hello"]["status"] == "blocked"
    refused = run_cli(["-p", "no:nanochat-hello", "run", "hello", "--run", "x"], home, sites)
    assert refused.returncode != 0
    assert "unknown stage 'hello'" in refused.stderr
    assert "Traceback" not in refused.stderr
    refused = run_cli(
        ["run", "hello", "--run", "x"], home, sites, NANOCHAT_DISABLE_PLUGIN_AUTOLOAD="1"
    )
    assert refused.returncode != 0
    back = run_cli(
        ["-p", "nanochat-hello", "run", "hello", "--run", "x"],
        home,
        sites,
        NANOCHAT_DISABLE_PLUGIN_AUTOLOAD="1",
    )
    assert back.returncode == 0, back.stderr
    assert (home / "runs" / "x" / "hello" / "hello.txt").is_file()


def test_plugin_command_is_added(home: Path, plugin_sites) -> None:
    result = run_cli(["hello", "world"], home, [plugin_sites["hello"]])
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "hello, world!"
    help_text = run_cli(["--help"], home, [plugin_sites["hello"]]).stdout
    assert "hello" in help_text


def test_failing_plugin_is_isolated(home: Path, plugin_sites) -> None:
    sites = [plugin_sites["broken"], plugin_sites["hello"]]
    result = run_cli(["plugins", "--json"], home, sites)
    assert result.returncode == 0
    broken = by_name(json.loads(result.stdout))["nanochat-broken"]
    assert broken["status"] == "failed"
    assert broken["error"] == "import: RuntimeError: nanochat-broken exploded on import"
    warnings = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(warnings) == 1 and "nanochat-broken" in warnings[0], result.stderr
    listed = run_cli(["list", "stages"], home, sites)
    assert listed.returncode == 0 and "hello" in listed.stdout
    ran = run_cli(["run", "hello", "--run", "b"], home, sites)
    assert ran.returncode == 0, ran.stderr
    unknown = run_cli(["run", "nope", "--run", "b"], home, sites)
    assert "nanochat-broken" in unknown.stderr  # unknown-name errors mention failed plugins


def test_strict_mode_fails_on_broken_plugin(home: Path, plugin_sites) -> None:
    result = run_cli(["plugins"], home, [plugin_sites["broken"]], NANOCHAT_STRICT_PLUGINS="1")
    assert result.returncode != 0
    assert "RuntimeError: nanochat-broken exploded on import" in result.stderr
    assert "Traceback" not in result.stderr


def test_help_and_plugins_do_not_import_torch(home: Path, plugin_sites) -> None:
    code = (
        "import sys\n"
        "from nanochat.core.cli import main\n"
        "try:\n"
        "    main(sys.argv[1:])\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = [m for m in ('torch', 'datasets', 'pyarrow', 'wandb') if m in sys.modules]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    for args in (["--help"], ["plugins"], ["plugins", "--json"], ["list", "stages"]):
        result = subprocess.run(
            [sys.executable, "-c", code, *args],
            capture_output=True,
            text=True,
            env=cli_env(home, [plugin_sites["hello"]]),
            timeout=120,
        )
        assert "HEAVY []" in result.stderr, (args, result.stderr)

"""`nanochat report`: the card's table, stage costs, plots, and runs that are not finished."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import run_in_process

from nanochat.core.report import collect_stages, summary_table, write_report
from nanochat.core.rundir import read_run_record

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _stage(scope: str, produces: list[str], kind: str = "stage") -> dict[str, object]:
    plugin = "nanochat-evals" if kind == "eval" else "nanochat-stages"
    name = scope.removeprefix("eval-")
    return {
        "kind": kind,
        "label": scope,
        "name": name,
        "scope": scope,
        "options": {},
        "plugin": plugin,
        "produces": produces,
        "qualified_name": f"{plugin}/{name}",
    }


def make_run(home: Path, finished_sft: bool = True) -> Path:
    """A run folder as the stages leave it: record, metrics and done.json files."""
    run = home / "runs" / "r"
    stages = [
        _stage("pretrain", ["model"]),
        _stage("eval-bpb", [], "eval"),
        _stage("sft", ["model", "chat"]),
        _stage("eval-gsm8k", [], "eval") | {"options": {"dataset": "arithmetic"}},
    ]
    record = {
        "run": "r",
        "created": "2026-11-30T00:00:00+00:00",
        "preset": "tiny",
        "model": {"name": "gpt"},
        "tokenizer": {"name": "rustbpe"},
        "stages": stages,
        "commands": [{"time": "t0", "labels": ["pretrain", "eval:bpb", "sft"], "preset": "tiny"}],
    }
    metrics = [
        {"time": 100.0, "stage": "pretrain", "event": "start", "index": 1, "count": 3},
        {"time": 100.5, "stage": "pretrain", "event": "plan", "params": 1000}
        | {"flops_per_token": 6000},
        {"time": 101.0, "stage": "pretrain", "event": "base_eval", "base_val_bpb": 3.0},
    ]
    metrics += [
        {"time": 101.0 + s, "stage": "pretrain", "step": s, "loss": 5 - s / 10, "tokens": 64 * s}
        for s in range(10)
    ]
    metrics += [
        {"time": 111.0, "stage": "pretrain", "event": "eval", "step": 9, "val_bpb": 2.0},
        {"time": 112.0, "stage": "eval-bpb", "event": "start", "index": 2, "count": 3},
        {"time": 113.0, "stage": "eval-bpb", "bpb": 2.1, "tokens": 512, "scored": "pretrain/s9"},
        # sft: interrupted after 5 s, resumed 1000 s later, ran 3 s more
        {"time": 200.0, "stage": "sft", "event": "start", "index": 3, "count": 3},
        {"time": 205.0, "stage": "sft", "step": 0, "loss": 2.0, "tokens": 32},
        {"time": 1205.0, "stage": "sft", "event": "start", "index": 3, "count": 3},
        {"time": 1205.5, "stage": "pretrain", "event": "skipped", "reason": "finished"},
        {"time": 1208.0, "stage": "sft", "step": 1, "loss": 1.5, "tokens": 64},
        {"time": 1210.0, "stage": "eval-gsm8k", "accuracy": 0.25, "stderr": 0.1, "pass@1": 0.25}
        | {"problems": 16, "scored": "sft/step_1"},
        {"time": 113.5, "stage": "eval-bpb", "event": "end", "bpb": 2.1},
        # a standalone `nanochat eval bpb` later scored sft
        {"time": 1300.0, "stage": "eval-bpb", "bpb": 1.9, "tokens": 512, "scored": "sft/step_1"},
    ]
    run.mkdir(parents=True)
    (run / "pipeline.json").write_text(json.dumps(record))
    with (run / "metrics.jsonl").open("w") as out:
        for m in metrics:
            out.write(json.dumps(m) + "\n")
        out.write('{"time": 1301.0, "stage": "sft", "ste')  # a line cut by a crash
    done = {"pretrain": {"val_bpb": 2.0, "tokens": 640, "params": 1000, "seconds": 11.0}}
    done["eval-bpb"] = {"bpb": 2.1, "tokens": 512}
    if finished_sft:
        done["sft"] = {"val_loss": 1.2, "tokens": 64, "params": 1000}
    for scope, result in done.items():
        (run / scope).mkdir()
        (run / scope / "done.json").write_text(json.dumps({"result": result}))
    return run


def test_summary_columns_rows_and_costs(tmp_path: Path) -> None:
    run = make_run(tmp_path)
    stages = collect_stages(run, read_run_record(run) or {}, None)
    columns, rows, errors = summary_table(stages)
    assert columns == ["PRETRAIN", "SFT"]
    assert rows["validation bits/byte"] == {"PRETRAIN": 2.0}
    assert rows["validation loss (nats/token)"] == {"SFT": 1.2}
    # an evaluator's result lands in the column of the stage it scored; newest wins
    assert rows["bpb"] == {"PRETRAIN": 2.1, "SFT": 1.9}
    assert "bpb tokens" not in rows  # counts are not rows
    # a problems eval: accuracy with its standard error
    assert rows["gsm8k accuracy (arithmetic)"] == {"SFT": 0.25}
    assert errors["gsm8k accuracy (arithmetic)"] == {"SFT": 0.1}
    assert rows["gsm8k pass@1 (arithmetic)"] == {"SFT": 0.25}  # no registry: every metric
    by_scope = {s.scope: s for s in stages}
    assert by_scope["pretrain"].flops == 6000 * 640
    assert by_scope["sft"].seconds == pytest.approx(8.0)  # 5 s + 3 s, not the 1000 s gap
    assert by_scope["pretrain"].seconds == 11.0  # a later run's "skipped" record adds nothing
    assert by_scope["eval-bpb"].seconds == pytest.approx(1.5)  # not the standalone eval later
    assert by_scope["sft"].status == "finished"


def test_report_file_plots_and_labels(tmp_path: Path, home: Path, monkeypatch, capsys) -> None:
    run = make_run(home)
    path = write_report(run)
    text = path.read_text()
    assert path == run / "report.md"
    assert "| metric | PRETRAIN | SFT |" in text
    assert "| validation bits/byte | 2 | — |" in text
    plots = sorted((run / "report").glob("*.png"))
    assert [p.name for p in plots] == ["training_loss.png", "validation.png"]
    for plot in plots:
        data = plot.read_bytes()
        assert data.startswith(PNG_MAGIC) and len(data) > 10_000
        assert f"(report/{plot.name})" in text
    # the CLI uses the built-in stages' report labels
    code, out, err = run_in_process(["report", "--run", "r"], [], monkeypatch, capsys)
    assert code == 0, err
    assert out.strip() == str(run / "report.md")
    text = (run / "report.md").read_text()
    assert "| metric | BASE | SFT |" in text
    # the built-in gsm8k eval names its headline metric: pass@1 is not a row then
    assert "| gsm8k accuracy (arithmetic) | — | 0.25 ± 0.1 |" in text
    assert "pass@1" not in text


def test_unfinished_run_and_missing_run(home: Path, monkeypatch, capsys) -> None:
    run = make_run(home, finished_sft=False)
    text = write_report(run).read_text()
    assert "| `sft` | nanochat-stages/sft | unfinished |" in text
    assert "2 of 4 stages finished" in text
    code, _, err = run_in_process(["report", "--run", "nope"], [], monkeypatch, capsys)
    assert code != 0
    assert err.startswith("Error: run 'nope' does not exist")


def test_policy_stages_stay_out_of_the_loss_plot_and_noisy_curves_are_averaged() -> None:
    """RL/DPO losses are policy objectives, not nats/token: the loss figure leaves them out (and
    is not drawn when only they report a loss); the moving average is a plain trailing mean."""
    from nanochat.core.report import StageReport
    from nanochat.core.report_plots import _curve, moving_average

    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
    rl = StageReport("rl", "stage", "nanochat-stages", "RL", ["chat"])
    rl.records = [{"step": i, "loss": 0.01, "reward": 0.5} for i in range(3)]
    sft = StageReport("sft", "stage", "nanochat-stages", "SFT", ["chat"])
    sft.records = [{"step": i, "loss": 2.0 - i} for i in range(3)]
    assert _curve(rl, "loss") == ([], [])
    assert _curve(rl, "reward") == ([0, 1, 2], [0.5, 0.5, 0.5])
    assert _curve(sft, "loss") == ([0, 1, 2], [2.0, 1.0, 0.0])

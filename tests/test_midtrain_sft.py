"""The midtrain and sft stages: batches, the decaying schedule, learning, resume, re-run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import kill_when_checkpointed, run_cli, run_torchrun
from nanochat_stages.chat_batches import ConversationStream, PackedChatBatches, PaddedChatBatches
from nanochat_stages.options import MidtrainOptions, SftOptions
from nanochat_stages.presets import presets
from nanochat_stages.schedule import lr_multiplier
from safetensors.torch import load_file
from test_conversation import AE, BOS, CharTokenizer

from nanochat.core.data import ListDataset
from nanochat.core.registry import Registry

SMALL = [
    *("-o", "tokenizer.vocab_size=1024"),
    *("-o", "tokenizer.max_chars=400000"),
    *("-o", "tokenizer.eval_chars=20000"),
    *("-o", "model.depth=2"),
    *("-o", "model.head_dim=64"),
    *("-o", "model.sequence_len=128"),
    *("-o", "pretrain.device_batch_size=8"),
    *("-o", "pretrain.max_steps=20"),
    *("-o", "pretrain.eval_every=1000"),
    *("-o", "pretrain.eval_tokens=1024"),
    *("-o", "pretrain.sample_tokens=4"),
    *("-o", "midtrain.device_batch_size=8"),
    *("-o", "midtrain.eval_conversations=48"),
    *("-o", "midtrain.sample_tokens=8"),
    *("-o", "midtrain.keep_checkpoints=10"),
    *("-o", "sft.eval_conversations=48"),
    *("-o", "sft.sample_tokens=8"),
    *("-o", "sft.keep_checkpoints=10"),
]


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def stage_records(home: Path, run: str, stage: str) -> list[dict]:
    return [r for r in read_jsonl(home / "runs" / run / "metrics.jsonl") if r.get("stage") == stage]


def done(home: Path, run: str, stage: str) -> dict:
    return json.loads((home / "runs" / run / stage / "done.json").read_text())["result"]


# ---------------------------------------------------------------- schedule (Must-show 3)


@pytest.mark.parametrize("options", [MidtrainOptions(), SftOptions()], ids=["midtrain", "sft"])
@pytest.mark.parametrize("steps", [1, 7, 30, 1000])
def test_chat_stage_learning_rate_decays_to_zero(options, steps: int) -> None:
    values = [
        lr_multiplier(s, steps, options.warmup_ratio, options.warmdown_ratio, options.final_lr_frac)
        for s in range(steps)
    ]
    assert values[0] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(values, values[1:], strict=False)), values
    warmdown = max(1, round(options.warmdown_ratio * steps))
    assert values[-1] <= 1.0 / warmdown + 1e-9  # one step from zero
    assert lr_multiplier(steps, steps, 0.0, options.warmdown_ratio, 0.0) == pytest.approx(0.0)


def test_tiny_preset_sets_chat_stages() -> None:
    tiny = next(p for p in presets() if p.name == "tiny")
    for key in ("midtrain.max_steps", "sft.max_steps", "midtrain.device_batch_size"):
        assert key in tiny.overrides


def test_a_preset_sets_dataset_options() -> None:
    """The tiny preset's `arithmetic.*` options reach the run's dataset options (a preset's
    dataset scopes were once dropped silently); a command-line override still wins."""
    from nanochat.core.plan import plan_run
    from nanochat.core.registry import Registry

    registry = Registry.load()
    plan = plan_run(registry, ["sft"], "r", preset="tiny")
    assert plan.dataset_options["nanochat-datasets/arithmetic"].bare_fraction == 0.5
    plan = plan_run(registry, ["sft"], "r", preset="tiny", overrides=["arithmetic.bare_fraction=0"])
    assert plan.dataset_options["nanochat-datasets/arithmetic"].bare_fraction == 0.0
    # rl (alone, or after sft in one command) practises on bigger numbers than sft learned on
    for stages in (["rl"], ["sft", "rl", "eval:gsm8k"]):
        plan = plan_run(registry, stages, "r", preset="tiny")
        sft, rl, evals = (
            plan.datasets_for(s).get("nanochat-datasets/arithmetic")
            for s in ("sft", "rl", "eval-gsm8k")
        )
        assert rl is not None and (rl.max_value, rl.bare_fraction) == (300, 0.5)
        assert sft is not None and sft.max_value == 100 and evals is sft


# ---------------------------------------------------------------- batches


class Chats(ListDataset):
    kind = "chat"
    name = "chats"

    def __init__(self, conversations: list) -> None:
        super().__init__()
        self.conversations = conversations

    def load_split(self, split: str) -> list:
        return self.conversations


def chat(question: str, answer: str) -> list[dict]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


CHATS = [chat("q" * (1 + i % 7), "a" * (1 + i % 5)) for i in range(40)] + [chat("x", "y" * 50)]


def test_packed_rows_keep_conversations_whole_and_mask_targets() -> None:
    stream = ConversationStream(Chats(CHATS), CharTokenizer(), max_tokens=33)
    batches = PackedChatBatches(stream, rows=6, row_len=33, buffer=8)
    a_id, q_id, y_id = 100 + ord("a"), 100 + ord("q"), 100 + ord("y")
    for _ in range(6):  # more than an epoch of the 41 conversations
        inputs, targets = batches.next_batch()
        assert inputs.shape == targets.shape == (6, 32)
        assert (inputs[:, 0] == BOS).all()
        assistant = (targets == a_id) | (targets == y_id) | (targets == AE)
        assert (assistant | (targets == -1)).all()  # loss only on assistant output
        assert not (targets == q_id).any()
        for row_in, row_tgt in zip(inputs, targets, strict=True):
            ids = torch.cat([row_in, row_tgt[-1:]]).tolist()
            starts = [i for i, t in enumerate(ids) if t == BOS]
            # conversations are whole: each one is followed by another or by padding
            for a, b in zip(starts, starts[1:], strict=False):
                assert ids[b - 1] == AE or all(t == BOS for t in ids[a:b])
        frac = (targets >= 0).float().mean().item()
        assert 0.0 < frac < 1.0
    # the long answer is cut to the row and counted, once per epoch
    assert 1 <= stream.counts["truncated"] <= stream.epoch + 1


def test_padded_rows_and_drop_counting() -> None:
    stream = ConversationStream(Chats(CHATS), CharTokenizer(), max_tokens=33, overflow="drop")
    batches = PaddedChatBatches(stream, rows=4)
    seen = 0
    while stream.counts["used"] + stream.counts["dropped"] < len(CHATS):
        inputs, targets = batches.next_batch()
        assert inputs.shape[0] == 4 and inputs.shape[1] <= 32
        assert ((targets >= 0).sum(dim=1) > 0).all()  # every row carries loss
        seen += 4
    assert stream.counts["dropped"] == 1 and stream.counts["truncated"] == 0


@pytest.mark.parametrize("packed", [True, False])
def test_chat_batches_resume_exactly(packed: bool) -> None:
    def make(state=None):
        stream = ConversationStream(
            Chats(CHATS), CharTokenizer(), 33, seed=3, state=state and state["stream"]
        )
        if packed:
            return PackedChatBatches(stream, 3, 33, 8, state)
        return PaddedChatBatches(stream, 3)

    first = make()
    for _ in range(25):  # past the end of an epoch
        first.next_batch()
    second = make(first.state())
    for _ in range(10):
        a, b = first.next_batch(), second.next_batch()
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert first.stream.epoch >= 1


# ---------------------------------------------------------------- the stages, end to end


CHAT_STEPS = [
    *("-o", "midtrain.max_steps=16", "-o", "midtrain.eval_every=8"),
    *("-o", "midtrain.checkpoint_every=4"),
    *("-o", "sft.max_steps=12", "-o", "sft.eval_every=6", "-o", "sft.checkpoint_every=4"),
    *("-o", "sft.mixture=identity:4,arithmetic:0.05"),
]


@pytest.fixture(scope="module")
def chat_home(tmp_path_factory) -> Path:
    """A run `c` with tokenizer, pretrain, midtrain and sft finished (small settings)."""
    home = tmp_path_factory.mktemp("chat-home")
    args = [
        *("run", "tokenizer", "pretrain", "midtrain", "sft", "--run", "c", *SMALL),
        *CHAT_STEPS,
    ]
    result = run_cli(args, home, timeout=900)
    assert result.returncode == 0, result.stderr[-3000:]
    (home / "args.json").write_text(json.dumps(args))
    return home


def _loss_on_held_out(home: Path, run: str, stage: str) -> float:
    """Loss of a stage's newest model on sft's held-out conversations, computed here."""
    from nanochat_stages.chat_eval import chat_eval_batches, evaluate_chat_loss, held_out

    from nanochat.core.checkpoint import CheckpointManager
    from nanochat.core.data_refs import open_dataset
    from nanochat.core.runtime import init_runtime
    from nanochat.plugins.gpt.factory import GPTFactory

    run_dir = home / "runs" / run
    tokenizer = Registry.load().create("tokenizer", "rustbpe").load(run_dir / "tokenizer")
    checkpoint = CheckpointManager(run_dir / stage / "checkpoints").latest()
    model = GPTFactory().build(checkpoint.meta["model_config"])
    model.load_state_dict(checkpoint.model_state())
    model.eval()
    val = open_dataset(SftOptions().val_mixture, kind="chat")
    batches = chat_eval_batches(held_out(val, 48), tokenizer, 128, 8)
    return evaluate_chat_loss(model, batches, init_runtime("cpu"))


@pytest.mark.slow
def test_sft_validation_loss_falls_below_the_base_model(chat_home: Path) -> None:
    sft, midtrain = done(chat_home, "c", "sft"), done(chat_home, "c", "midtrain")
    base = _loss_on_held_out(chat_home, "c", "pretrain")
    assert sft["val_loss"] == pytest.approx(_loss_on_held_out(chat_home, "c", "sft"), rel=1e-3)
    assert sft["val_loss"] < base - 0.5, (sft["val_loss"], base)
    assert sft["val_loss"] < sft["base_val_loss"]  # sft improves on its starting point too
    assert midtrain["val_loss"] < midtrain["base_val_loss"]
    init = [r for r in stage_records(chat_home, "c", "sft") if r.get("event") == "init"]
    assert init and init[0]["source"] == "midtrain"
    samples = [r for r in stage_records(chat_home, "c", "sft") if r.get("event") == "sample"]
    assert samples and all("<|assistant_start|>" in r["text"] for r in samples)


def test_stages_log_loss_fraction_and_a_decaying_schedule(chat_home: Path) -> None:
    for stage, steps in (("midtrain", 16), ("sft", 12)):
        records = [r for r in stage_records(chat_home, "c", stage) if "loss" in r]
        assert [r["step"] for r in records] == list(range(steps))
        fractions = [r["loss_tokens_frac"] for r in records]
        assert all(0.0 < f < 1.0 for f in fractions), fractions
        lrs = [r["lr_mult"] for r in records]
        assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False)), lrs
        assert lrs[-1] < 0.15, lrs  # the regression: mid-training's schedule ran backwards
    result = done(chat_home, "c", "midtrain")
    assert result["conversations_used"] > 0 and "conversations_truncated" in result


def test_rerun_skips_finished_stages(chat_home: Path) -> None:
    args = json.loads((chat_home / "args.json").read_text())
    before = len(read_jsonl(chat_home / "runs" / "c" / "metrics.jsonl"))
    result = run_cli(args, chat_home)
    assert result.returncode == 0, result.stderr[-3000:]
    new = read_jsonl(chat_home / "runs" / "c" / "metrics.jsonl")[before:]
    skipped = {r["stage"] for r in new if r.get("event") == "skipped"}
    assert skipped == {"tokenizer", "pretrain", "midtrain", "sft"}
    assert not [r for r in new if "loss" in r]


def _weights(home: Path, run: str, stage: str, step: int) -> dict[str, torch.Tensor]:
    path = home / "runs" / run / stage / "checkpoints" / f"step_{step:08d}"
    return load_file(str(path / "model.safetensors"))


@pytest.mark.slow
@pytest.mark.parametrize(("stage", "last", "restart"), [("midtrain", 15, 7), ("sft", 11, 7)])
def test_exact_resume_equals_straight_run(
    chat_home: Path, tmp_path: Path, stage: str, last: int, restart: int
) -> None:
    stages = ["tokenizer", "pretrain", "midtrain"] + (["sft"] if stage == "sft" else [])
    args = ["run", *stages, "--run", "c", *SMALL, *CHAT_STEPS]
    shutil.copytree(chat_home / "runs" / "c", tmp_path / "runs" / "c")
    stage_dir = tmp_path / "runs" / "c" / stage
    for step in range(restart + 1, last + 1):
        shutil.rmtree(stage_dir / "checkpoints" / f"step_{step:08d}", ignore_errors=True)
    (stage_dir / "done.json").unlink()
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    a, b = _weights(chat_home, "c", stage, last), _weights(tmp_path, "c", stage, last)
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    straight = {r["step"]: r["loss"] for r in stage_records(chat_home, "c", stage) if "loss" in r}
    resumed = [r for r in stage_records(tmp_path, "c", stage) if "loss" in r]
    for record in resumed[-(last - restart) :]:
        assert record["loss"] == straight[record["step"]]
    resumes = [r for r in stage_records(tmp_path, "c", stage) if r.get("event") == "resume"]
    assert resumes[-1]["step"] == restart + 1


@pytest.mark.slow
def test_sigkill_during_sft_resumes(chat_home: Path, tmp_path: Path) -> None:
    shutil.copytree(chat_home / "runs" / "c", tmp_path / "runs" / "c")
    shutil.rmtree(tmp_path / "runs" / "c" / "sft")
    args = [
        *("run", "sft", "--run", "c", *SMALL),
        *("-o", "sft.max_steps=30", "-o", "sft.checkpoint_every=2", "-o", "sft.eval_every=1000"),
    ]
    checkpoints = tmp_path / "runs" / "c" / "sft" / "checkpoints"
    _, steps = kill_when_checkpointed(args, tmp_path, checkpoints, 2)
    assert steps and steps[-1] < 29
    result = run_cli(args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    resumes = [r for r in stage_records(tmp_path, "c", "sft") if r.get("event") == "resume"]
    assert resumes and resumes[-1]["step"] == steps[-1] + 1
    assert done(tmp_path, "c", "sft")["steps"] == 30


def test_sft_without_a_base_model_fails_clearly(tmp_path: Path, chat_home: Path) -> None:
    run_dir = tmp_path / "runs" / "empty"
    run_dir.mkdir(parents=True)
    shutil.copytree(chat_home / "runs" / "c" / "tokenizer", run_dir / "tokenizer")
    result = run_cli(["run", "sft", "--run", "empty", *SMALL], tmp_path)
    assert result.returncode != 0
    assert "`midtrain` or `pretrain`" in result.stderr and "Traceback" not in result.stderr


def test_greedy_identity_answer_after_sft_is_a_proper_turn(chat_home: Path) -> None:
    from nanochat_stages.chat_eval import generate_reply

    from nanochat.core.checkpoint import CheckpointManager
    from nanochat.core.conversation import render_for_completion
    from nanochat.core.data_refs import open_dataset
    from nanochat.plugins.gpt.factory import GPTFactory

    run_dir = chat_home / "runs" / "c"
    tokenizer = Registry.load().create("tokenizer", "rustbpe").load(run_dir / "tokenizer")
    checkpoint = CheckpointManager(run_dir / "sft" / "checkpoints").latest()
    model = GPTFactory().build(checkpoint.meta["model_config"])
    model.load_state_dict(checkpoint.model_state())
    model.eval()
    conversation = next(open_dataset("identity").iter("val", shuffle=False))[0]
    prompt = render_for_completion(tokenizer, conversation)
    reply, ended = generate_reply(model, tokenizer, prompt, 64)
    text = tokenizer.decode(reply)
    assert ended and text.endswith("<|assistant_end|>"), text


@pytest.mark.slow
def test_sft_under_torchrun_two_ranks(chat_home: Path, tmp_path: Path) -> None:
    shutil.copytree(chat_home / "runs" / "c", tmp_path / "runs" / "c")
    shutil.rmtree(tmp_path / "runs" / "c" / "sft")
    args = [
        *("run", "sft", "--run", "c", *SMALL),
        *("-o", "sft.max_steps=4", "-o", "sft.eval_every=2", "-o", "sft.checkpoint_every=2"),
    ]
    before = len(stage_records(tmp_path, "c", "sft"))  # the copied run's own sft records
    result = run_torchrun(2, args, tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    records = [r for r in stage_records(tmp_path, "c", "sft")[before:] if "loss" in r]
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    assert all(0.0 < r["loss_tokens_frac"] < 1.0 for r in records)
    assert done(tmp_path, "c", "sft")["val_loss"] > 0
    checkpoint = tmp_path / "runs" / "c" / "sft" / "checkpoints" / "step_00000003"
    state = torch.load(checkpoint / "state.pt", weights_only=True)
    assert len(state["data"]) == 2  # both ranks' data positions


def test_sample_tokens_zero_turns_samples_off() -> None:
    """``-o sft.sample_tokens=0`` (or pretrain's) means no samples, not a crash at the end."""
    from nanochat_stages.chat_eval import sample_answers
    from nanochat_stages.options import PretrainOptions
    from nanochat_stages.text_recipe import TextRecipe

    question = {"messages": [{"role": "user", "content": "hi"}]}
    assert sample_answers(None, None, [question], 64, 0) == []  # type: ignore[list-item]
    assert TextRecipe(PretrainOptions(sample_tokens=0)).samples(None) == []

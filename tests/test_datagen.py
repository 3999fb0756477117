"""``nanochat datagen`` against a stub teacher: bad answers are retried or counted and never crash
the run; Retry-After, rate limits, dedup, resuming after a kill, and errors a person can act on."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, cli_env, run_cli, run_in_process
from datagen_helpers import StubTeacher, example_replies, identity_reply, read_records

from nanochat.core.registry import Registry


def datagen(
    stub: StubTeacher,
    out: Path,
    n: int,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    *extra: str,
    template: str = "identity",
) -> tuple[int, dict[str, Any] | None, str]:
    """``nanochat datagen TEMPLATE`` in this process: (exit code, summary, stderr)."""
    args = [
        "datagen",
        template,
        "--endpoint",
        stub.url,
        "--model",
        "stub",
        "-n",
        str(n),
        "--out",
        str(out),
        "--backoff",
        "0.01",
        "--json",
        *extra,
    ]
    monkeypatch.setenv("NANOCHAT_PROGRESS", "off")
    code, stdout, stderr = run_in_process(args, [], monkeypatch, capsys)
    summary = json.loads(stdout) if stdout.strip().startswith("{") else None
    return code, summary, stderr


def written_lines(out: Path) -> int:
    """Complete lines in the folder's shards (0 before it exists)."""
    return sum(p.read_bytes().count(b"\n") for p in out.glob("*.jsonl")) if out.exists() else 0


def first_attempt(fault: str):  # type: ignore[no-untyped-def]
    """Every job's first request goes wrong with ``fault``; the retry is answered."""
    return lambda key, attempt: fault if attempt == 1 else None


# fault on the first attempt of every job -> the cause counted for each of them
RETRIED = [
    ("non-json", "non-json"),
    ("truncated", "truncated"),
    ("cut", "truncated"),
    ("http-500", "http-500"),
    ("http-503", "http-503"),
    ("http-429", "http-429"),
    ("timeout", "timeout"),
    ("empty-choices", "empty-choices"),
    ("stream-error", "stream-error"),
]


@pytest.mark.parametrize("stream", [True, False], ids=["stream", "json"])
@pytest.mark.parametrize(("fault", "cause"), RETRIED, ids=[f for f, _ in RETRIED])
def test_bad_answers_are_retried(
    fault: str,
    cause: str,
    stream: bool,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    if fault == "stream-error" and not stream:
        cause = "truncated"  # a plain JSON answer has no error events: the stub cuts it instead
    n = 4 if fault in ("timeout", "http-429", "http-503") else 6
    with StubTeacher(identity_reply, first_attempt(fault)) as stub:
        extra = ["--concurrency", "8", "--timeout", "0.5" if fault == "timeout" else "10"]
        code, summary, err = datagen(
            stub,
            tmp_path / "out",
            n,
            monkeypatch,
            capsys,
            *extra,
            *([] if stream else ["--no-stream"]),
        )
    assert code == 0, err
    assert summary is not None
    assert summary["records"] == n and summary["written"] == n
    assert summary["errors"] == {cause: n}
    assert summary["retries"] == n and summary["requests"] == 2 * n
    assert summary["failed_total"] == 0
    assert summary["prompt_tokens"] == 11 * n and summary["completion_tokens"] == 7 * n
    records = read_records(tmp_path / "out")
    assert len({r["id"] for r in records}) == n
    assert all(stub.attempts[r["id"]] == 2 for r in records)


def test_failures_that_never_end_are_counted_and_the_run_goes_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Job 1 always gets a 500 (retried until --retries runs out), job 2 a 400 (not retried):
    both are counted as failed, the other jobs fill the folder."""

    def fault(key: str, attempt: int) -> str | None:
        return {"identity-s0-0000001": "http-500", "identity-s0-0000002": "http-400"}.get(key)

    with StubTeacher(identity_reply, fault, delay=0.02) as stub:
        code, summary, err = datagen(
            stub,
            tmp_path / "out",
            20,
            monkeypatch,
            capsys,
            *("--retries", "3", "--backoff", "0", "--concurrency", "2"),
        )
        assert stub.attempts["identity-s0-0000001"] == 4
        assert stub.attempts["identity-s0-0000002"] == 1
    assert code == 0, err
    assert summary is not None
    assert summary["records"] == 20
    assert summary["failed"] == {"http-400": 1, "http-500": 1}
    assert summary["errors"] == {"http-400": 1, "http-500": 4}
    ids = {r["id"] for r in read_records(tmp_path / "out")}
    assert "identity-s0-0000001" not in ids and "identity-s0-0000002" not in ids


def test_retry_after_is_honoured(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with StubTeacher(identity_reply, first_attempt("http-429")) as stub:
        code, summary, err = datagen(stub, tmp_path / "out", 1, monkeypatch, capsys)
        times = [s.at for s in stub.seen]
    assert code == 0, err
    assert len(times) == 2
    assert times[1] - times[0] >= 0.95  # Retry-After: 1, though --backoff is 0.01


def test_an_unauthorised_key_stops_the_run_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with StubTeacher(identity_reply, lambda key, attempt: "http-401") as stub:
        code, summary, err = datagen(stub, tmp_path / "out", 5, monkeypatch, capsys)
        assert len(stub.seen) <= 8  # no retries of a refused key
    assert code == 1
    assert summary is not None and summary["records"] == 0
    assert "the teacher refused the request (http-401" in err
    assert "Traceback" not in err


def test_rate_limit_spaces_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with StubTeacher(identity_reply) as stub:
        code, _, err = datagen(
            stub, tmp_path / "out", 21, monkeypatch, capsys, "--rate", "20/s", "--concurrency", "16"
        )
        times = sorted(s.at for s in stub.seen)
    assert code == 0, err
    assert len(times) == 21
    assert times[-1] - times[0] >= 0.9  # 20 gaps of 1/20 s
    # no burst: without the limit all 21 would arrive within a few milliseconds (slack for a
    # loaded machine, where late sleepers can wake together)
    for i in range(len(times)):
        assert sum(1 for t in times if times[i] <= t < times[i] + 0.5) <= 14


def test_duplicates_are_dropped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A teacher that gives the same answer to the same question yields each pair once."""
    with StubTeacher(lambda key, body: "I am nanochat, nice to meet you.") as stub:
        code, summary, err = datagen(
            stub, tmp_path / "out", 12, monkeypatch, capsys, "--max-jobs", "400"
        )
    assert code == 0, err
    assert summary is not None and summary["duplicates"] > 0
    records = read_records(tmp_path / "out")
    pairs = [(r["messages"][0]["content"], r["messages"][1]["content"]) for r in records]
    assert len(records) == 12 and len(set(pairs)) == 12


def test_math_word_problems_from_a_stub_teacher_read_as_chat_and_problems(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from nanochat.core.data_refs import open_dataset

    template = Registry.load().create("template", "math-word-problems")
    out = tmp_path / "math"
    with StubTeacher(example_replies(template)) as stub:
        code, summary, err = datagen(
            stub, out, 10, monkeypatch, capsys, template="math-word-problems"
        )
    assert code == 0, err
    assert summary is not None and summary["records"] == 10
    registry = Registry.load()
    chats = [
        item
        for item, _ in open_dataset(f"chat-jsonl:{out}/*.jsonl", registry).iter(
            "train", shuffle=False
        )
    ]
    chats += [
        item
        for item, _ in open_dataset(f"chat-jsonl:{out}/*.jsonl", registry).iter(
            "val", shuffle=False
        )
    ]
    assert len(chats) == 10
    assert all(any(p["type"] == "python" for p in c[1]["content"]) for c in chats)
    (shard,) = sorted(out.glob("*.jsonl"))
    problems = [
        item for item, _ in open_dataset(f"gsm8k:{shard}", registry).iter("train", shuffle=False)
    ]
    assert len(problems) == 10
    for problem in problems:
        worked = "".join(p["text"] for p in problem.solution["content"] if p["type"] == "text")
        assert problem.reward(worked) == 1.0


def test_bad_input_gives_one_line(tmp_path: Path, home: Path) -> None:
    base = ["--endpoint", "http://127.0.0.1:9/v1", "--model", "m", "-n", "3"]
    out = ["--out", str(tmp_path / "o")]
    cases = [
        (["datagen", "identiti", *base, *out], "did you mean: identity"),
        (["datagen", "identity", *base, *out, "--rate", "fast"], "--rate 'fast'"),
        (["datagen", "identity", *base[2:], "--endpoint", "localhost:8000", *out], "http://"),
        (["datagen", "identity", *base, *out, "-o", "nmae=x"], "did you mean: name"),
        (["datagen", "identity", *base, *out, "-o", "max_tokens=0"], "max_tokens=0"),
        (["datagen", "identity", *base, *out, "--broker", "amqp://h"], "redis://"),
        (["datagen", "identity", *base, *out, "--api-key-env", "NO_SUCH_VAR_X"], "not set"),
        (["datagen", "identity", *base, "--out", str(REPO / "README.md")], "not a folder"),
        (["datagen", "worker", "--broker", "http://h"], "redis://"),
    ]
    for args, message in cases:
        result = run_cli(args, home, timeout=60)
        assert result.returncode != 0, args
        assert message in result.stderr, (args, result.stderr)
        assert "Traceback" not in result.stderr
        assert len(result.stderr.strip().splitlines()) == 1, result.stderr


def test_rerun_with_other_settings_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    with StubTeacher(identity_reply) as stub:
        code, _, err = datagen(stub, tmp_path / "out", 3, monkeypatch, capsys)
        assert code == 0, err
        code, _, err = datagen(stub, tmp_path / "out", 3, monkeypatch, capsys, "--seed", "1")
    assert code == 2
    assert "holds data made with other settings (seed differ)" in err


def test_kill_and_rerun_gives_exactly_n_unique_records(tmp_path: Path) -> None:
    """SIGKILL a run mid-way (and tear its last line), run again: exactly N unique records, and
    no job that was written before the kill is asked again."""
    n = 60
    out = tmp_path / "out"
    with StubTeacher(identity_reply, delay=0.05) as stub:
        args = [
            sys.executable,
            "-m",
            "nanochat",
            "datagen",
            "identity",
            "--endpoint",
            stub.url,
            "--model",
            "stub",
            "-n",
            str(n),
            "--out",
            str(out),
            "--concurrency",
            "4",
        ]
        proc = subprocess.Popen(
            args,
            env=cli_env(None, NANOCHAT_PROGRESS="off"),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 60
        while time.time() < deadline and written_lines(out) < 15:
            time.sleep(0.02)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        before = read_records(out)
        assert 15 <= len(before) < n
        (shard,) = sorted(out.glob("*.jsonl"))
        with shard.open("a") as f:
            f.write('{"id": "identity-s0-9999999", "messages": [{"role": "us')  # a torn write
        asked_before = len(stub.seen)
        result = subprocess.run(
            [*args, "--json"],
            env=cli_env(None, NANOCHAT_PROGRESS="off"),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stderr
        asked_after = [s.key for s in stub.seen[asked_before:]]
    records = read_records(out)
    assert len(records) == n
    assert len({r["id"] for r in records}) == n
    assert len({json.dumps(r["messages"]) for r in records}) == n
    assert not {r["id"] for r in before} & set(asked_after)
    assert "dropped a partial last line" in result.stderr
    summary = json.loads(result.stdout)
    assert summary["records_before"] == len(before) and summary["written"] == n - len(before)

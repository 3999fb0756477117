"""``nanochat datagen --broker``: a real Redis server on loopback, two real Celery worker
processes, the stub teacher. Every job is done exactly once; the jobs of a worker SIGKILLed
mid-job are re-delivered, and the output has no duplicates and no gaps."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, cli_env
from datagen_helpers import StubTeacher, identity_reply, read_records

REDIS_SERVER = shutil.which("redis-server")
if REDIS_SERVER is None:
    pytestmark = pytest.mark.skip(
        reason="Debian's redis-server is not installed (apt-get install redis-server; .ci/run "
        "does it)"
    )

# A lost worker's jobs go out again after this long; a job still running that long would be
# handed out twice (harmless, but not "exactly once"), so only the kill test uses a short one.
VISIBILITY_S = 30.0
KILL_TEST_VISIBILITY_S = 3.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[str]:
    """A fresh redis-server on 127.0.0.1 (no persistence); its URL."""
    import redis

    port = _free_port()
    proc = subprocess.Popen(
        [
            REDIS_SERVER,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    deadline = time.time() + 20
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            assert time.time() < deadline, "redis-server did not start"
            time.sleep(0.05)
    try:
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


class Workers:
    """``nanochat datagen worker`` processes, each in its own session (killable as a whole)."""

    def __init__(self, url: str, log_dir: Path, visibility_s: float) -> None:
        self.url = url
        self.visibility_s = visibility_s
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, concurrency: int = 2) -> None:
        log = (self.log_dir / f"{name}.log").open("wb")
        self.procs[name] = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "nanochat",
                "datagen",
                "worker",
                "--broker",
                self.url,
                "--concurrency",
                str(concurrency),
                "--visibility-timeout",
                str(self.visibility_s),
                "--hostname",
                f"{name}@test",
            ],
            env=cli_env(None),
            cwd=REPO,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def kill(self, name: str) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.procs[name].pid, signal.SIGKILL)
        self.procs[name].wait(10)

    def stop_all(self) -> None:
        for name, proc in self.procs.items():
            if proc.poll() is None:
                self.kill(name)

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")


@pytest.fixture
def workers(broker: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Workers]:
    """Workers ``w1`` and ``w2``, two threads each (``@pytest.mark.parametrize("workers",
    [SECONDS], indirect=True)`` sets their visibility timeout)."""
    group = Workers(broker, tmp_path, getattr(request, "param", VISIBILITY_S))
    group.start("w1")
    group.start("w2")
    try:
        yield group
    finally:
        group.stop_all()


def enqueue(stub: StubTeacher, url: str, out: Path, n: int) -> subprocess.Popen[str]:
    """The enqueuing command, started in the background."""
    return subprocess.Popen(
        [
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
            "--broker",
            url,
            "--concurrency",
            "8",
            "--backoff",
            "0.01",
            "--json",
        ],
        env=cli_env(None, NANOCHAT_PROGRESS="off"),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(proc: subprocess.Popen[str], workers: Workers, timeout: float = 120) -> dict[str, Any]:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        logs = f"{workers.log('w1')}\n{workers.log('w2')}"
        raise AssertionError(f"the enqueuer hung:\n{err}\n{logs}") from None
    assert proc.returncode == 0, f"{err}\n{workers.log('w1')}\n{workers.log('w2')}"
    summary: dict[str, Any] = json.loads(out)
    return summary


def run_hashes(url: str, name: str) -> dict[int, str]:
    """The ``name`` hash (``executions`` or ``running``) of the only run in Redis."""
    import redis

    client = redis.Redis.from_url(url, decode_responses=True)
    (key,) = client.keys(f"nanochat:datagen:*:{name}") or [None]
    if key is None:
        return {}
    return {int(k): v for k, v in client.hgetall(key).items()}


def expected_ids(n: int) -> list[str]:
    return [f"identity-s0-{i:07d}" for i in range(n)]


def test_two_workers_do_every_job_exactly_once(
    broker: str, workers: Workers, tmp_path: Path
) -> None:
    from nanochat_datasets.datagen.distributed import TASK_NAME, make_app, stop_key

    n = 40
    out = tmp_path / "out"
    with StubTeacher(identity_reply, delay=0.1) as stub:
        summary = finish(enqueue(stub, broker, out, n), workers)
        records = read_records(out)
        assert sorted(r["id"] for r in records) == expected_ids(n)  # no gaps, no duplicates
        assert summary["records"] == n and summary["jobs"] == n
        assert set(summary["workers"]) == {"w1@test", "w2@test"}
        assert set(stub.keys_seen().values()) == {1}  # each job asked once
        assert run_hashes(broker, "executions") == {i: "1" for i in range(n)}

        # a job delivered twice writes once: deliver jobs 0-3 again, as a broker might
        import redis

        client = redis.Redis.from_url(broker, decode_responses=True)
        (result_key,) = client.keys("nanochat:datagen:*:result:0")
        run = result_key.split(":")[2]
        client.delete(stop_key(run))
        app = make_app(broker)
        before = client.get(result_key)
        for record in records[:4]:
            index = int(record["id"].rsplit("-", 1)[1])
            payload = {
                "broker": broker,
                "run": run,
                "template": "nanochat-datasets/identity",
                "options": json.loads((out / ".datagen" / "config.json").read_text())["options"],
                "seed": 0,
                "index": index,
                "key": record["id"],
                "teacher": {"url": stub.url + "/chat/completions", "model": "stub"},
            }
            app.send_task(TASK_NAME, args=[payload], task_id=f"{run}:{record['id']}")
        deadline = time.time() + 30
        while client.llen("nanochat-datagen") or client.hlen("unacked"):
            assert time.time() < deadline, "the duplicate deliveries were not consumed"
            time.sleep(0.05)
        assert client.get(result_key) == before
        assert set(stub.keys_seen().values()) == {1}
        assert run_hashes(broker, "executions") == {i: "1" for i in range(n)}


@pytest.mark.parametrize("workers", [KILL_TEST_VISIBILITY_S], indirect=True)
def test_a_killed_workers_jobs_are_redelivered(
    broker: str, workers: Workers, tmp_path: Path
) -> None:
    import redis

    n = 40
    out = tmp_path / "out"
    client = redis.Redis.from_url(broker, decode_responses=True)
    with StubTeacher(identity_reply, delay=0.5) as stub:
        proc = enqueue(stub, broker, out, n)
        deadline = time.time() + 60
        killed: list[int] = []
        while not killed:
            assert time.time() < deadline, f"w1 never ran a job:\n{workers.log('w1')}"
            running = run_hashes(broker, "running")
            killed = sorted(i for i, w in running.items() if w == "w1@test")
            time.sleep(0.02)
        workers.kill("w1")  # SIGKILL, mid-job
        # what w1 was running when it died stays marked with its name until re-delivered
        marks = run_hashes(broker, "running")
        killed = sorted(
            i
            for i, w in marks.items()
            if w == "w1@test" and not client.keys(f"nanochat:datagen:*:result:{i}")
        )
        assert killed
        summary = finish(proc, workers)
        records = read_records(out)
        assert sorted(r["id"] for r in records) == expected_ids(n)  # no duplicates, no gaps
        assert summary["records"] == n
        executions = run_hashes(broker, "executions")
        seen = stub.keys_seen()
        for index in killed:
            result = json.loads(
                client.get(next(iter(client.keys(f"nanochat:datagen:*:result:{index}"))))
            )
            assert result["worker"] == "w2@test"  # re-delivered to the survivor
            assert executions[index] == "2" and seen[expected_ids(n)[index]] == 2
        others = [i for i in range(n) if i not in killed]
        assert all(executions[i] == "1" for i in others)


def test_a_worker_without_the_api_key_stops_the_run_with_one_line(
    broker: str, workers: Workers, tmp_path: Path
) -> None:
    """The key never travels through the broker: workers read it from their own environment."""
    with StubTeacher(identity_reply) as stub:
        result = subprocess.run(
            [
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
                "3",
                "--out",
                str(tmp_path / "out"),
                "--broker",
                broker,
                "--api-key-env",
                "DATAGEN_TEST_KEY",
            ],
            env=cli_env(None, NANOCHAT_PROGRESS="off", DATAGEN_TEST_KEY="secret"),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert not stub.seen
    assert result.returncode == 1, result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("Error:")]
    assert "a job cannot run on w" in line and "$DATAGEN_TEST_KEY is not set on worker" in line
    assert "Traceback" not in result.stderr

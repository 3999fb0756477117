"""The FineWeb downloader against a local HTTP server (the hub mocked at the HTTP boundary)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from dataset_helpers import write_parquet
from nanochat_datasets.download import download_shards, shard_name
from nanochat_datasets.text import Fineweb

from nanochat.core.cli import main

N_SHARDS = 4


class ShardServer(ThreadingHTTPServer):
    """Serves ``shard_NNNNN.parquet`` files; can cut a download short or fail a shard."""

    def __init__(self, shards: dict[str, bytes]):
        super().__init__(("127.0.0.1", 0), ShardHandler)
        self.shards = shards
        self.requests: Counter[str] = Counter()
        self.truncate_first: set[str] = set()
        self.always_fail: set[str] = set()
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/data"


class ShardHandler(BaseHTTPRequestHandler):
    server: ShardServer

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet
        pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        name = self.path.rsplit("/", 1)[-1]
        with self.server.lock:
            self.server.requests[name] += 1
            attempt = self.server.requests[name]
        body = self.server.shards.get(name)
        if body is None or name in self.server.always_fail:
            self.send_error(404 if body is None else 503)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if name in self.server.truncate_first and attempt == 1:
            self.wfile.write(body[: len(body) // 2])  # the connection drops mid-download
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(body)


@pytest.fixture(scope="module")
def shard_bytes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, bytes]:
    root = tmp_path_factory.mktemp("origin")
    shards = {}
    for index in range(N_SHARDS):
        docs = [f"shard {index} document {i} " + "lorem ipsum " * 20 for i in range(400)]
        path = write_parquet(root / shard_name(index), docs, 100)
        shards[path.name] = path.read_bytes()
    return shards


@pytest.fixture
def server(shard_bytes: dict[str, bytes]) -> Iterator[ShardServer]:
    srv = ShardServer(shard_bytes)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def test_download_retries_a_failure_mid_download(server: ShardServer, tmp_path: Path) -> None:
    server.truncate_first = {shard_name(1), shard_name(2)}
    report = download_shards(tmp_path, N_SHARDS, server.url, workers=3, retries=3, backoff=0.01)
    assert report.failed == {} and sorted(report.fetched) == sorted(server.shards)
    assert server.requests[shard_name(1)] == 2 and server.requests[shard_name(0)] == 1
    for name, body in server.shards.items():
        assert (tmp_path / name).read_bytes() == body
    assert not list(tmp_path.glob("*.tmp"))
    # the downloaded shards stream as the fineweb dataset, the last one as validation
    ds = Fineweb(tmp_path)
    assert sum(1 for _ in ds.iter("train")) == 3 * 400
    assert sum(1 for _ in ds.iter("val")) == 400


def test_present_shards_are_skipped(server: ShardServer, tmp_path: Path) -> None:
    (tmp_path / shard_name(0)).write_bytes(server.shards[shard_name(0)])
    report = download_shards(tmp_path, 2, server.url, workers=2, backoff=0.01)
    assert report.skipped == [shard_name(0)] and report.fetched == [shard_name(1)]
    assert server.requests[shard_name(0)] == 0


def test_a_shard_that_keeps_failing_is_reported(server: ShardServer, tmp_path: Path) -> None:
    server.always_fail = {shard_name(1)}
    report = download_shards(tmp_path, 2, server.url, workers=2, retries=3, backoff=0.01)
    assert list(report.failed) == [shard_name(1)] and "503" in report.failed[shard_name(1)]
    assert server.requests[shard_name(1)] == 3
    assert not (tmp_path / shard_name(1)).exists()
    assert not list(tmp_path.glob("*.tmp"))


def _run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exc:
        main(args)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def test_cli_download_command(server: ShardServer, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("NANOCHAT_FINEWEB_URL", server.url)
    server.truncate_first = {shard_name(0)}
    code, out, err = _run_cli(
        ["data", "download", "fineweb", "-n", "3", "--dir", str(tmp_path), "--backoff", "0.01"],
        capsys,
    )
    assert code == 0, err
    assert "3 downloaded" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == [shard_name(i) for i in range(3)]
    code, out, err = _run_cli(
        ["data", "download", "fineweb", "-n", "3", "--dir", str(tmp_path)], capsys
    )
    assert code == 0 and "3 already present" in out


def test_cli_download_failure_is_one_line(server: ShardServer, tmp_path: Path, capsys) -> None:
    code, out, err = _run_cli(
        [
            "data",
            "download",
            "fineweb",
            "-n",
            str(N_SHARDS + 1),
            "--dir",
            str(tmp_path),
            "--base-url",
            server.url,
            "--retries",
            "2",
            "--backoff",
            "0.01",
        ],
        capsys,
    )
    assert code != 0
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if line.startswith("Error:")]
    assert len(error_lines) == 1 and shard_name(N_SHARDS) in error_lines[0]


def test_download_stage_in_a_pipeline(
    server: ShardServer, tmp_path: Path, home: Path, capsys
) -> None:
    """The GPU presets' first stage: downloads once, a re-run skips it; failures are one line."""
    target = tmp_path / "shards"
    options = ["-o", f"download-fineweb.base_url={server.url}"]
    options += ["-o", f"download-fineweb.path={target}", "-o", "download-fineweb.retries=1"]
    options += ["-o", "download-fineweb.num_shards=3"]
    code, _, err = _run_cli(["run", "download-fineweb", "--run", "dl", *options], capsys)
    assert code == 0, err
    assert sorted(p.name for p in target.iterdir()) == [shard_name(i) for i in range(3)]
    done = json.loads((home / "runs" / "dl" / "download-fineweb" / "done.json").read_text())
    assert done["result"]["downloaded"] == 3 and done["result"]["shards"] == 3
    options[-1] = f"download-fineweb.num_shards={N_SHARDS + 1}"  # one more than the server has
    code, _, err = _run_cli(["run", "download-fineweb", "--run", "dl2", *options], capsys)
    assert code != 0 and "Traceback" not in err
    assert f"1 of {N_SHARDS + 1} shards failed to download" in err

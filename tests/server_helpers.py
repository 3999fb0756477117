"""Running the real chat server in a subprocess for tests, and talking to it."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from conftest import REPO, cli_env

SERVING = re.compile(r"serving run .* on http://127\.0\.0\.1:(\d+)/")


class ServerProcess:
    """``nanochat serve --run RUN --port 0 ARGS`` in its own session (workers included), with
    its stderr collected by a thread (run ``c`` unless ``run`` names another)."""

    def __init__(
        self, args: Sequence[str], home: Path, sites: Sequence[Path], run: str = "c", **env: str
    ) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nanochat", "serve", "--run", run, "--port", "0", *args],
            env=cli_env(home, sites, **env),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lines: list[str] = []
        self.port = 0
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line)
            match = SERVING.search(line)
            if match:
                self.port = int(match.group(1))

    @property
    def log(self) -> str:
        """Everything the server wrote to stderr so far."""
        return "".join(self.lines)

    def wait_ready(self, timeout: float = 300) -> ServerProcess:
        """Block until the server says where it listens."""
        deadline = time.time() + timeout
        while not self.port:
            if self.proc.poll() is not None:
                self._reader.join(5)
                raise AssertionError(f"the server exited ({self.proc.returncode}):\n{self.log}")
            if time.time() > deadline:
                raise AssertionError(f"the server did not start in {timeout}s:\n{self.log}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        """SIGTERM, then SIGKILL the whole session if it lingers."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def request(
    port: int,
    method: str,
    path: str,
    body: bytes | dict[str, Any] | None = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    timeout: float = 60,
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP request: ``(status, headers, body bytes)``."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    sent = {"Content-Type": "application/json", **(headers or {})}
    if key is not None:
        sent["Authorization"] = f"Bearer {key}"
    try:
        connection.request(method, path, body=data, headers=sent)
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def events(raw: bytes) -> list[Any]:
    """The JSON payloads of a server-sent event stream (``[DONE]`` kept as a string)."""
    out = []
    for block in raw.decode().split("\n\n"):
        if block.startswith("data: "):
            payload = block[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


def answer(raw: bytes) -> tuple[str, str | None, set[int]]:
    """Text, finish reason and workers of a nanochat stream."""
    items = events(raw)
    text = "".join(e["token"] for e in items if "token" in e)
    finish = next((e["finish_reason"] for e in items if e.get("done")), None)
    return text, finish, {e["gpu"] for e in items if "gpu" in e}


def stats(port: int, key: str) -> dict[str, Any]:
    """``GET /stats``."""
    status, _, body = request(port, "GET", "/stats", key=key)
    assert status == 200, body
    result: dict[str, Any] = json.loads(body)
    return result


def chat_body(text: str, **fields: Any) -> dict[str, Any]:
    """A one-message chat request."""
    return {"messages": [{"role": "user", "content": text}], **fields}

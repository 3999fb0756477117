"""The web UI in a real browser: Debian's Chromium, driven by Playwright, against the real server.

Nothing is mocked: the test trains a tiny model, starts ``nanochat serve`` on 127.0.0.1 and a
free port, and opens ``GET /`` in headless Chromium (the Debian package, launched through
``executable_path``; nothing downloads a browser).

How the page gets an answer full of markup: the model is the test plugin's GRU, and the run's
last stage, ``polish`` (a third-party stage of that plugin), trains it on one fixed text,
:data:`MARKUP`. A model trained on nothing else answers anything with that text, so the server
streams ``<img src=x onerror=alert(1)>`` and ``<script>`` token by token through the SSE route,
exactly as a real model's text would arrive. The test checks the page shows them as text,
creates no element from them and opens no dialog, both while streaming and when an answer sent
back as conversation history is drawn again.

Screenshots are kept under the test's ``tmp_path``; with ``NANOCHAT_WEBUI_SHOTS=DIR`` set, the
desktop and phone ones are also copied to ``DIR/webui.png`` and ``DIR/webui-phone.png``.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO, run_cli
from server_helpers import ServerProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
MARKUP = "<img src=x onerror=alert(1)> <script>alert(2)</script> "
PAGE = REPO / "nanochat" / "plugins" / "server" / "static" / "index.html"
RUN = "c"  # the run name tests/server_helpers.ServerProcess serves
TRAIN = [
    "run",
    "tokenizer",
    "pretrain",
    "polish",
    "--run",
    RUN,
    "--model",
    "gru",
    "--tokenizer",
    "bytes",
    "-o",
    "tokenizer.max_chars=20000",
    "-o",
    "tokenizer.eval_chars=2000",
    "-o",
    "model.sequence_len=128",
    "-o",
    "pretrain.max_steps=2",
    "-o",
    "pretrain.device_batch_size=2",
    "-o",
    "pretrain.eval_every=2",
    "-o",
    "pretrain.eval_tokens=256",
    "-o",
    "pretrain.sample_tokens=2",
    "-o",
    "polish.steps=100",
    "-o",
    "polish.lr_scale=5",
    "-o",
    f"polish.text={MARKUP}",
]

if CHROMIUM is None:
    reason = "Debian's chromium is not installed (apt-get install chromium; .ci/run does it)"
    if os.environ.get("CI"):
        raise RuntimeError(reason)
    pytestmark = pytest.mark.skip(reason=reason)

# Records every length the last answer's text takes while it is drawn (to see it stream).
WATCH_STREAM = """
window.__lengths = [];
document.addEventListener("DOMContentLoaded", () => {
  new MutationObserver(() => {
    const bodies = document.querySelectorAll(".msg.assistant .body");
    if (!bodies.length) return;
    const body = bodies[bodies.length - 1];
    if (body.classList.contains("cursor")) window.__lengths.push(body.textContent.length);
  }).observe(document.getElementById("transcript"),
             {childList: true, subtree: true, characterData: true, attributes: true});
});
"""


def start_server(home: Path, sites: list[Path], *options: str) -> ServerProcess:
    """``nanochat serve`` on the polished model, on 127.0.0.1 and a free port."""
    args = ["--source", "polish", "--host", "127.0.0.1", *options]
    return ServerProcess(args, home, sites, OMP_NUM_THREADS="1").wait_ready()


@pytest.fixture(scope="module")
def webui_run(tmp_path_factory: pytest.TempPathFactory, plugin_sites) -> tuple[Path, list[Path]]:
    """A run whose newest model answers everything with :data:`MARKUP`."""
    home = tmp_path_factory.mktemp("webui-home")
    sites = [plugin_sites["gru"]]
    result = run_cli(TRAIN, home, sites, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return home, sites


@pytest.fixture(scope="module")
def server(webui_run) -> Iterator[ServerProcess]:
    """The server on the trained run."""
    running = start_server(*webui_run)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium under Playwright."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=args)
        yield launched
        launched.close()


class Page:
    """A browser page on the UI, recording dialogs and page errors."""

    def __init__(self, browser: Any, url: str, online: bool = True, **context: Any) -> None:
        self.context = browser.new_context(**context)
        self.page = self.context.new_page()
        self.page.set_default_timeout(60_000)
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.page.on("dialog", self._dialog)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.add_init_script(WATCH_STREAM)
        self.page.goto(url)
        if online:
            self.page.wait_for_selector("#status[data-state='ok']")

    def _dialog(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def send(self, text: str) -> dict[str, Any]:
        """Type ``text``, press Enter, wait for the whole answer; returns the request's body."""
        self.page.fill("#input", text)
        with self.page.expect_request("**/chat/completions") as request:
            self.page.press("#input", "Enter")
        self.wait_answered()
        return json.loads(request.value.post_data)

    def wait_answered(self) -> None:
        """Wait until no answer is streaming."""
        self.page.wait_for_selector("#send:not(.stop)")
        self.page.wait_for_selector(".msg.assistant .cursor", state="detached")

    def texts(self, role: str) -> list[str]:
        """What the page shows of each message of ``role``."""
        return self.page.locator(f".msg.{role} .body").all_text_contents()

    def assert_no_markup_ran(self) -> None:
        """No element came from model text, no dialog opened, no script error."""
        assert self.page.locator("#transcript img, #transcript script").count() == 0
        assert self.dialogs == [] and self.errors == []

    def close(self) -> None:
        self.context.close()


def keep_screenshot(page: Any, tmp_path: Path, name: str) -> Path:
    """Screenshot into ``tmp_path`` (and ``$NANOCHAT_WEBUI_SHOTS`` when set)."""
    path = tmp_path / name
    page.screenshot(path=str(path))
    if os.environ.get("NANOCHAT_WEBUI_SHOTS"):
        target = Path(os.environ["NANOCHAT_WEBUI_SHOTS"])
        target.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target / name)
    return path


@pytest.mark.slow
def test_stream_edit_regenerate_and_markup_shown_as_text(server, browser, tmp_path) -> None:
    ui = Page(browser, server.url, viewport={"width": 1100, "height": 820})
    page = ui.page
    page.click("#settings-btn")
    page.fill("#temperature", "0")
    page.fill("#top-k", "0")
    page.fill("#max-tokens", "400")
    page.click("#settings-btn")

    sent = ui.send("Hello there")
    assert sent["messages"] == [{"role": "user", "content": "Hello there"}]
    assert sent["temperature"] == 0 and sent["top_k"] == 0 and sent["max_tokens"] == 400
    # Streamed: the answer was drawn at several growing lengths before it was complete.
    lengths = page.evaluate("window.__lengths")
    (answer,) = ui.texts("assistant")
    partial = sorted({n for n in lengths if 0 < n < len(answer)})
    assert len(partial) >= 2, lengths
    # The model's markup is on the page as text, and nothing of it ran.
    assert "<img src=x onerror=alert(1)>" in answer and "<script>alert(2)</script>" in answer
    ui.assert_no_markup_ran()

    # Edit the question: the answer after it goes, a new one streams for the edited text.
    page.click(".msg.user [data-action='edit']")
    box = ".msg.user .edit-box textarea"
    page.wait_for_selector(box)
    # The box opens focused, the caret after the old text, ready to type.
    assert page.evaluate(
        f"(() => {{ const a = document.querySelector({json.dumps(box)});"
        " return [document.activeElement === a, a.selectionStart, a.value.length]; })()"
    ) == [True, len("Hello there"), len("Hello there")]
    page.fill(box, "Something else, please")
    with page.expect_request("**/chat/completions") as request:
        page.click("text=Save & regenerate")
    ui.wait_answered()
    assert json.loads(request.value.post_data)["messages"] == [
        {"role": "user", "content": "Something else, please"}
    ]
    assert ui.texts("user") == ["Something else, please"]
    (edited_answer,) = ui.texts("assistant")
    assert "onerror" in edited_answer
    ui.assert_no_markup_ran()

    # Regenerate at temperature 0: the same request again, so the same answer.
    with page.expect_request("**/chat/completions") as request:
        page.click(".msg.assistant [data-action='regenerate']")
    ui.wait_answered()
    assert json.loads(request.value.post_data)["messages"] == [
        {"role": "user", "content": "Something else, please"}
    ]
    assert ui.texts("assistant") == [edited_answer]

    # A follow-up sends the answer back as history; every message is drawn again, still as text.
    sent = ui.send("And then?")
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert sent["messages"][1]["content"] == edited_answer
    assert len(ui.texts("assistant")) == 2
    ui.assert_no_markup_ran()
    keep_screenshot(page, tmp_path, "webui.png")

    page.click("#new-chat")
    assert page.locator(".msg").count() == 0 and page.is_visible("#empty")
    ui.close()


def test_tool_calls_and_markdown_render_as_dom_nodes(browser) -> None:
    """The renderer alone, on the page opened from disk (no server needed)."""
    ui = Page(browser, PAGE.as_uri(), online=False)
    shown = ui.page.evaluate(
        """() => {
        const box = document.createElement("div");
        const draw = (text) => { window.nanochat.renderAnswer(box, text); return box; };
        const chips = (text) => [...draw(text).querySelectorAll(".tool")].map((chip) => ({
          expr: chip.querySelector(".tool-expr").textContent,
          out: chip.querySelector(".tool-out").textContent,
          running: chip.classList.contains("running"),
        }));
        return {
          tokens: chips("So <|python_start|>6*7<|python_end|><|output_start|>42<|output_end|>."),
          readable: chips("So [calculator: 6*7] = 42 is it."),
          streaming: chips("Let me see: <|python_start|>12/"),
          markup: chips("<|python_start|><b>1</b><|python_end|><|output_start|><i>x</i>"),
          markupElements: box.querySelectorAll("b, i").length,
          markdown: (() => {
            draw("**bold** and `code`\\n\\n- one\\n- two\\n\\n" +
                 "```\\n<b>x</b>\\n```<|assistant_end|>");
            return {
              strong: box.querySelector("strong").textContent,
              code: box.querySelector("p code").textContent,
              items: box.querySelectorAll("li").length,
              pre: box.querySelector("pre").textContent,
              bold: box.querySelectorAll("b").length,
              text: box.textContent,
            };
          })(),
        };
      }"""
    )
    assert shown["tokens"] == [{"expr": "6*7", "out": "42", "running": False}]
    assert shown["readable"] == [{"expr": "6*7", "out": "42", "running": False}]
    assert shown["streaming"] == [{"expr": "12/", "out": "…", "running": True}]
    assert shown["markup"] == [{"expr": "<b>1</b>", "out": "<i>x</i>", "running": True}]
    assert shown["markupElements"] == 0
    markdown = shown["markdown"]
    assert markdown["strong"] == "bold" and markdown["code"] == "code" and markdown["items"] == 2
    assert markdown["pre"] == "<b>x</b>" and markdown["bold"] == 0
    assert "assistant_end" not in markdown["text"]
    ui.assert_no_markup_ran()
    ui.close()


@pytest.mark.slow
def test_phone_sized_screen(server, browser, tmp_path) -> None:
    ui = Page(
        browser,
        server.url,
        viewport={"width": 390, "height": 760},
        device_scale_factor=2,
        is_mobile=True,
        has_touch=True,
    )
    page = ui.page
    ui.send("Hi from a phone")
    assert len(ui.texts("assistant")) == 1
    layout = page.evaluate(
        """() => ({
        overflow: document.documentElement.scrollWidth - window.innerWidth,
        composer: document.getElementById("composer").getBoundingClientRect().toJSON(),
        buttons: ["settings-btn", "new-chat", "send"].map(
          (id) => document.getElementById(id).getBoundingClientRect().toJSON()),
        height: window.innerHeight,
      })"""
    )
    assert layout["overflow"] <= 0, layout
    assert layout["composer"]["top"] >= 0 and layout["composer"]["bottom"] <= layout["height"]
    for box in layout["buttons"]:  # on screen and big enough to tap
        assert box["right"] <= 390 and box["width"] >= 32 and box["height"] >= 32, box
    page.click("#settings-btn")
    assert page.is_visible("#temperature") and page.is_visible("#top-k")
    page.click("#settings-btn")
    keep_screenshot(page, tmp_path, "webui-phone.png")
    ui.assert_no_markup_ran()
    ui.close()


KEY = "test-key-123"


def hog(url: str, started: threading.Event, done: threading.Event) -> None:
    """Hold the server's only slot with a long answer (sets ``started`` at its first event)."""
    body = {"messages": [{"role": "user", "content": "hog"}], "max_tokens": 1000}
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {KEY}"}
    request = urllib.request.Request(f"{url}/chat/completions", json.dumps(body).encode(), headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            for line in response:
                if line.startswith(b"data:"):
                    started.set()
    finally:
        started.set()
        done.set()


@pytest.mark.slow
def test_api_key_busy_and_gone_servers_are_reported(webui_run, browser, tmp_path) -> None:
    options = ["-o", "max_batch=1", "-o", "queue_size=0", "-o", "shutdown_timeout_s=1"]
    busy = start_server(*webui_run, "--api-key", KEY, *options)
    ui = Page(browser, busy.url, viewport={"width": 900, "height": 700})
    page = ui.page
    try:
        # A key is needed: the page says so and opens the settings; with the key it answers.
        page.fill("#input", "Let me in")
        with page.expect_response("**/chat/completions") as response:
            page.press("#input", "Enter")
        assert response.value.status == 401
        page.wait_for_selector("#notice:not([hidden])")
        assert "API key" in page.inner_text("#notice .text") and page.is_visible("#api-key")
        page.fill("#api-key", KEY)
        with page.expect_request("**/chat/completions") as request:
            page.click("#notice button")
        ui.wait_answered()
        assert request.value.headers["authorization"] == f"Bearer {KEY}"
        assert len(ui.texts("assistant")) == 1 and page.is_hidden("#notice")

        # Too long for the model's context (1024 tokens): a new chat keeps the message to send.
        long_message = "word " * 250
        page.fill("#input", long_message)
        with page.expect_response("**/chat/completions") as response:
            page.press("#input", "Enter")
        assert response.value.status == 400
        page.wait_for_selector("#notice:not([hidden])")
        assert "Too long for the model" in page.inner_text("#notice .text")
        page.click("#notice button")
        assert page.locator(".msg").count() == 0 and page.input_value("#input") == long_message
        page.fill("#input", "")

        # Busy: the only slot is taken and nothing may queue, so the server answers 503.
        started, done = threading.Event(), threading.Event()
        threading.Thread(target=hog, args=(busy.url, started, done), daemon=True).start()
        assert started.wait(60)
        page.fill("#input", "Anyone free?")
        with page.expect_response("**/chat/completions") as response:
            page.press("#input", "Enter")
        assert not done.is_set(), "the long answer ended before the page asked: no 503 to see"
        assert response.value.status == 503
        page.wait_for_selector("#notice:not([hidden])")
        assert "busy" in page.inner_text("#notice .text")
        assert page.get_attribute("#status", "data-state") == "busy"
        assert ui.texts("user") == ["Anyone free?"] and ui.texts("assistant") == []
        keep_screenshot(page, tmp_path, "webui-busy.png")
    finally:
        busy.stop()

    # The server is gone: sending says so, and keeps the message.
    page.fill("#input", "Hello?")
    page.press("#input", "Enter")
    # A locator wait, not wait_for_function: the page's CSP forbids the eval that a string
    # predicate needs once it has to poll.
    page.locator("#notice .text", has_text="Cannot reach the server").wait_for()
    assert page.get_attribute("#notice", "data-kind") == "error"
    assert page.get_attribute("#status", "data-state") == "down"
    assert ui.texts("user")[-1] == "Hello?"
    keep_screenshot(page, tmp_path, "webui-gone.png")
    ui.close()

"""The chat server against real clients: nanochat's SSE protocol byte for byte, the `openai`
client, every class of bad request, API keys, 32 concurrent streams, clients that vanish.

The server (two CPU workers, an API key) runs on a random free port of 127.0.0.1, on the tiny
chat run of the test plugins (GRU model, byte tokenizer); see ``chat_server`` in conftest."""

from __future__ import annotations

import asyncio
import json
import random
import time

import aiohttp
import openai
import pytest
from conftest import SERVER_KEY
from server_helpers import answer, chat_body, events, request, stats

from nanochat.core.chat import readable
from nanochat.core.conversation import render_for_completion
from nanochat.core.engine import Engine, Request, SamplingParams
from nanochat.core.registry import Registry

pytestmark = pytest.mark.slow
KEY = SERVER_KEY
CONTEXT = 512  # the GRU test model generates up to 8x its training length of 64


@pytest.fixture(scope="module")
def server(chat_server):
    """The shared server (two workers, 4 slots each, a queue of 24; see conftest)."""
    return chat_server


@pytest.fixture(scope="module")
def reference(chat_run):
    """The same run's chat model loaded in this process (what the server should say)."""
    from nanochat.core.chat import load_chat_model

    home, sites = chat_run
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("NANOCHAT_HOME", str(home))
        for site in sites:
            patch.syspath_prepend(str(site))
        return load_chat_model(Registry.load(), "c", device="cpu")


def test_sse_protocol_byte_for_byte(server, reference) -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello there. Who are you?"},
    ]
    body = {"messages": messages, "temperature": 0.8, "top_k": 20, "max_tokens": 40, "seed": 123}
    status, headers, raw = request(server.port, "POST", "/chat/completions", body, KEY)
    assert status == 200, raw
    assert headers["Content-Type"].startswith("text/event-stream")

    prompt = render_for_completion(reference.tokenizer, messages)
    params = SamplingParams(max_tokens=40, temperature=0.8, top_k=20, seed=123)
    engine = Engine(reference.model, reference.tokenizer, slots=1, tools=reference.tools)
    expected, finish = b"", None
    for event in engine.generate([Request(prompt, params)]):
        piece = readable(event.text)
        if piece:
            payload = json.dumps({"token": piece, "gpu": 0}, ensure_ascii=False)
            expected += f"data: {payload}\n\n".encode()
        finish = event.finish or finish
    expected += f'data: {{"done": true, "finish_reason": "{finish}"}}\n\n'.encode()
    assert raw == expected
    assert raw.count(b'"token"') >= 3


def test_openai_client_streams_completes_and_lists_models(server, reference) -> None:
    client = openai.OpenAI(base_url=f"{server.url}/v1", api_key=KEY, max_retries=0)
    messages = [{"role": "user", "content": "What is 2 plus 2?"}]
    common = {"model": "c", "messages": messages, "max_tokens": 24, "seed": 5, "temperature": 0.7}

    whole = client.chat.completions.create(**common)
    text = whole.choices[0].message.content
    assert whole.object == "chat.completion" and whole.choices[0].message.role == "assistant"
    assert whole.choices[0].finish_reason in ("stop", "length") and text
    prompt = render_for_completion(reference.tokenizer, messages)
    assert whole.usage.prompt_tokens == len(prompt)
    assert 1 <= whole.usage.completion_tokens <= 24
    assert whole.usage.total_tokens == len(prompt) + whole.usage.completion_tokens

    chunks = list(
        client.chat.completions.create(
            **common, stream=True, stream_options={"include_usage": True}
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == text  # same seed, same answer, streamed or not
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == whole.choices[0].finish_reason and not any(reasons[:-1])
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens

    if len(text) > 4:  # a stop string cuts the answer before it
        stop = text[2:4]
        cut = client.chat.completions.create(**common, stop=[stop])
        assert cut.choices[0].message.content == text[: text.find(stop)]
        assert cut.choices[0].finish_reason == "stop"

    assert [m.id for m in client.models.list().data] == ["c"]
    assert client.models.retrieve("c").owned_by == "nanochat"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("gpt-4")


def _bad_requests() -> list[tuple[str, bytes | dict, int, str]]:
    """(what, body, status, words in the error message)."""
    ok = [{"role": "user", "content": "hi"}]
    many = [{"role": "user", "content": "hi"}] * 257
    long_message = [{"role": "user", "content": "x" * CONTEXT}]
    long_chat = [{"role": r, "content": "y" * 100} for r in ("user", "assistant") * 3][:5]
    return [
        ("malformed JSON", b'{"messages": [', 400, "not valid JSON"),
        (
            "NaN",
            b'{"messages": [{"role": "user", "content": "hi"}], "temperature": NaN}',
            400,
            "not valid JSON",
        ),
        ("not UTF-8", b"\xff\xfe{}", 400, "UTF-8"),
        ("not an object", b"[1, 2]", 400, "JSON object"),
        ("no messages", {}, 400, "messages is required"),
        ("empty messages", {"messages": []}, 400, "empty"),
        ("messages not a list", {"messages": "hi"}, 400, "must be an array"),
        ("message not an object", {"messages": [3]}, 400, "must be an object"),
        ("unknown role", {"messages": [{"role": "robot", "content": "hi"}]}, 400, "role"),
        ("content not text", {"messages": [{"role": "user", "content": 5}]}, 400, "string"),
        ("no content", {"messages": [{"role": "user"}]}, 400, "no content"),
        (
            "system not first",
            {"messages": [*ok, {"role": "system", "content": "x"}, *ok]},
            400,
            "system",
        ),
        (
            "assistant last",
            {"messages": [*ok, {"role": "assistant", "content": "x"}]},
            400,
            "last message",
        ),
        ("too many messages", {"messages": many}, 400, "too many messages"),
        ("message too long", {"messages": long_message}, 400, "messages[0] is too long"),
        ("conversation too long", {"messages": long_chat}, 400, "conversation is too long"),
        ("temperature < 0", {"messages": ok, "temperature": -0.1}, 400, "temperature"),
        ("temperature > 2", {"messages": ok, "temperature": 2.5}, 400, "temperature"),
        ("temperature text", {"messages": ok, "temperature": "hot"}, 400, "temperature"),
        ("temperature bool", {"messages": ok, "temperature": True}, 400, "temperature"),
        ("top_k < 0", {"messages": ok, "top_k": -1}, 400, "top_k"),
        ("top_k fraction", {"messages": ok, "top_k": 1.5}, 400, "top_k"),
        ("top_k > vocab", {"messages": ok, "top_k": 10**6}, 400, "top_k"),
        ("top_p 0", {"messages": ok, "top_p": 0}, 400, "top_p"),
        ("top_p > 1", {"messages": ok, "top_p": 1.5}, 400, "top_p"),
        ("max_tokens 0", {"messages": ok, "max_tokens": 0}, 400, "max_tokens"),
        ("max_tokens > context", {"messages": ok, "max_tokens": CONTEXT + 1}, 400, "max_tokens"),
        ("max_tokens text", {"messages": ok, "max_tokens": "5"}, 400, "max_tokens"),
        ("seed too big", {"messages": ok, "seed": 2**64}, 400, "seed"),
        ("too many stops", {"messages": ok, "stop": ["a", "b", "c", "d", "e"]}, 400, "stop"),
        ("empty stop", {"messages": ok, "stop": [""]}, 400, "stop"),
        ("stop not text", {"messages": ok, "stop": 7}, 400, "stop"),
    ]


@pytest.mark.parametrize("route", ["/chat/completions", "/v1/chat/completions"])
def test_every_bad_request_gets_its_4xx_and_the_server_goes_on(server, route) -> None:
    cases = _bad_requests()
    if route.startswith("/v1"):
        cases += [
            (
                "stream not a bool",
                {"messages": [{"role": "user", "content": "x"}], "stream": 1},
                400,
                "stream",
            ),
            ("n = 2", {"messages": [{"role": "user", "content": "x"}], "n": 2}, 400, "n=1"),
        ]
    for what, body, status, words in cases:
        got, headers, raw = request(server.port, "POST", route, body, KEY)
        assert got == status, (what, raw)
        assert headers["Content-Type"].startswith("application/json"), what
        error = json.loads(raw)["error"]
        assert words in error["message"] and error["type"] == "invalid_request_error", (what, error)
    big = json.dumps(chat_body("z" * (2 * 1024 * 1024))).encode()
    got, _, raw = request(server.port, "POST", route, big, KEY)
    assert got == 413 and "too large" in json.loads(raw)["error"]["message"]
    got, _, raw = request(server.port, "POST", route, chat_body("still there?", max_tokens=4), KEY)
    assert got == 200, raw


def test_api_key_and_open_routes(server) -> None:
    body = chat_body("hi", max_tokens=2)
    for path, method in [
        ("/chat/completions", "POST"),
        ("/v1/chat/completions", "POST"),
        ("/v1/models", "GET"),
        ("/stats", "GET"),
    ]:
        for key in (None, "wrong-key", KEY[:-1], "not-this-one"):  # the flag beats the env
            status, headers, raw = request(server.port, method, path, body, key)
            assert status == 401, (path, key, raw)
            assert json.loads(raw)["error"]["type"] == "authentication_error"
            assert headers.get("WWW-Authenticate") == "Bearer"
        assert request(server.port, method, path, body, KEY)[0] == 200, path
    status, _, raw = request(server.port, "GET", "/health")
    assert status == 200 and json.loads(raw)["status"] == "ok"
    status, _, raw = request(server.port, "GET", "/")  # the web UI: no key needed
    assert status in (200, 404) and status != 401
    if status == 404:
        assert "web UI not installed" in json.loads(raw)["error"]["message"]
    status, _, raw = request(server.port, "GET", "/nowhere", key=KEY)
    assert status == 404 and json.loads(raw)["error"]["type"] == "not_found_error"
    status, _, raw = request(server.port, "GET", "/chat/completions", key=KEY)
    assert status == 405 and "error" in json.loads(raw)
    assert "hi" not in server.log.split("serving run", 1)[1]  # no message content in the logs


async def _stream(session: aiohttp.ClientSession, url: str, body: dict) -> tuple[int, bytes]:
    async with session.post(url, json=body, headers={"Authorization": f"Bearer {KEY}"}) as resp:
        return resp.status, await resp.read()


def test_32_concurrent_streams_equal_each_alone(server) -> None:
    prompts = [f"Question {i}: what comes after {i * 7}?" for i in range(32)]
    bodies = [
        chat_body(p, max_tokens=24, seed=1000 + i, temperature=0.9) for i, p in enumerate(prompts)
    ]
    url = f"{server.url}/chat/completions"
    busiest = 0

    async def together() -> list[tuple[int, bytes]]:
        nonlocal busiest
        async with aiohttp.ClientSession() as session:
            tasks = [asyncio.ensure_future(_stream(session, url, b)) for b in bodies]
            while not all(t.done() for t in tasks):
                async with session.get(
                    f"{server.url}/stats", headers={"Authorization": f"Bearer {KEY}"}
                ) as resp:
                    busiest = max(busiest, (await resp.json())["busy_slots"])
                await asyncio.sleep(0.02)
            return [t.result() for t in tasks]

    concurrent = asyncio.run(together())
    alone = [request(server.port, "POST", "/chat/completions", b, KEY) for b in bodies]
    for (status, raw), (status_alone, _, raw_alone) in zip(concurrent, alone, strict=True):
        assert status == status_alone == 200
        assert answer(raw)[:2] == answer(raw_alone)[:2]
    assert len({answer(raw)[0] for _, raw in concurrent}) > 16  # different prompts and seeds
    assert busiest > 1  # requests really shared decode steps


async def _vanish(port: int, body: dict, after_events: int, rng: random.Random | None) -> None:
    """Send a streaming request and drop the connection after some events (0: before any,
    a random moment later or, without ``rng``, at once)."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    data = json.dumps(body).encode()
    writer.write(
        b"POST /chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer {KEY}\r\nContent-Length: {len(data)}\r\n\r\n".encode()
        + data
    )
    await writer.drain()
    seen = 0
    while seen < after_events:
        line = await reader.readline()
        if not line:
            break
        seen += line.startswith(b"data: ")
    if not after_events and rng is not None:
        await asyncio.sleep(rng.uniform(0, 0.05))
    writer.transport.abort()  # gone, without a goodbye


def test_clients_that_disconnect_free_their_slots_at_once(server) -> None:
    rng = random.Random(0)
    budget = 400
    before = stats(server.port, KEY)["tokens_served"]
    bodies = [
        chat_body(f"Tell me a long story number {i}", max_tokens=budget, seed=i, temperature=1.0)
        for i in range(16)
    ]

    async def queued_then_gone(body: dict) -> None:
        await asyncio.sleep(0.2)  # the 16 above hold every slot: this one waits in the queue
        await _vanish(server.port, body, 0, None)

    async def clients() -> None:
        await asyncio.gather(
            *(_vanish(server.port, b, rng.randint(0, 6), rng) for b in bodies),
            *(queued_then_gone(chat_body(f"Queued {i}", max_tokens=budget)) for i in range(4)),
        )

    asyncio.run(clients())
    gone = time.monotonic()
    while True:
        now = stats(server.port, KEY)
        running = sum(w["requests_running"] for w in now["workers"])
        if now["busy_slots"] == 0 and now["queue_length"] == 0 and not running:
            break
        assert time.monotonic() - gone < 1.0, now
        time.sleep(0.02)
    time.sleep(0.3)
    served = stats(server.port, KEY)["tokens_served"] - before
    assert served < 16 * budget / 4, served  # cut short, not generated to the end
    status, _, raw = request(
        server.port, "POST", "/chat/completions", chat_body("ok?", max_tokens=3), KEY
    )
    assert status == 200 and events(raw)[-1]["done"]
    # Clients gone while queued (their response not begun) leave no traceback.
    assert "Traceback" not in server.log, server.log

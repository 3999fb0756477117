"""Parts of the chat server that need no running server: stop strings cut across pieces,
request fields, devices and threads, `nanochat serve`'s own errors."""

from __future__ import annotations

import socket

import pytest
from conftest import run_in_process

from nanochat.core.errors import UsageError
from nanochat.core.registry import Registry
from nanochat.core.serving import server_overrides
from nanochat.plugins.server.options import ServerOptions
from nanochat.plugins.server.protocol import (
    NANOCHAT_DEFAULTS,
    OPENAI_DEFAULTS,
    ApiError,
    parse_chat_request,
)
from nanochat.plugins.server.server import check_address, parse_devices, threads_per_worker
from nanochat.plugins.server.worker import StopMatcher


def run_matcher(stops: list[str], pieces: list[str]) -> tuple[list[str], bool]:
    matcher, out = StopMatcher(stops), []
    for piece in pieces:
        text, stopped = matcher.push(piece)
        out.append(text)
        if stopped:
            return out, True
    return [*out, matcher.flush()], False


@pytest.mark.parametrize(
    ("stops", "pieces", "released", "stopped"),
    [
        ([], ["ab", "c"], ["ab", "c", ""], False),
        (["END"], ["hello E", "N", "D more"], ["hello ", "", ""], True),  # split over pieces
        (["END"], ["hello E", "N", "O"], ["hello ", "", "ENO", ""], False),  # a false start
        (["x", "yz"], ["ay", "zx"], ["a", ""], True),  # the first to appear wins
        (["ab"], ["xa"], ["x", "a"], False),  # held back, then released at the end
        (["\n\n"], ["one\n", "\ntwo"], ["one", ""], True),
    ],
)
def test_stop_strings_cut_across_pieces(stops, pieces, released, stopped) -> None:
    assert run_matcher(stops, pieces) == (released, stopped)


def parse(body: dict, openai: bool = False):
    defaults = OPENAI_DEFAULTS if openai else NANOCHAT_DEFAULTS
    return parse_chat_request(
        body, defaults, max_messages=4, vocab_size=300, context=64, openai=openai
    )


def test_request_defaults_and_normalised_fields() -> None:
    user = [
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}
    ]
    own = parse({"messages": user})
    assert (own.temperature, own.top_k, own.top_p, own.stream) == (0.6, 50, None, True)
    assert own.messages == [{"role": "user", "content": "ab"}]  # OpenAI's text parts joined
    openai = parse({"messages": user, "top_p": 1, "top_k": 0, "stop": "x", "model": "any"}, True)
    assert (openai.temperature, openai.top_k, openai.top_p, openai.stop) == (1.0, None, None, ["x"])
    assert openai.stream is False
    assert parse({"messages": user, "max_completion_tokens": 7}, True).max_tokens == 7


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages[0].content",
        ),
        ({"messages": [{"role": "user", "content": "a"}] * 5}, "messages"),
        ({"messages": [{"role": "user", "content": "a"}], "seed": 1.5}, "seed"),
        ({"messages": [{"role": "user", "content": "a"}], "top_p": float("inf")}, "top_p"),
    ],
)
def test_bad_fields_name_their_parameter(body, param) -> None:
    with pytest.raises(ApiError) as error:
        parse(body)
    assert error.value.status == 400 and error.value.param == param


def test_devices_and_threads() -> None:
    assert parse_devices(ServerOptions(workers=3)) == ["cpu"] * 3
    assert parse_devices(ServerOptions(devices="cpu, cpu")) == ["cpu", "cpu"]
    for bad, words in [("cuda:99", "not available"), ("tpu", "not a device"), ("meta", "only cpu")]:
        with pytest.raises(UsageError, match=words):
            parse_devices(ServerOptions(devices=bad))
    assert threads_per_worker(["cpu"], 0) == 0  # one worker: torch's default
    assert threads_per_worker(["cpu"] * 64, 0) == 1
    assert threads_per_worker(["cpu", "cpu"], 3) == 3


def test_a_taken_port_or_unknown_host_fails_before_loading() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{port}"):
            check_address("127.0.0.1", port)
    with pytest.raises(UsageError, match="--host"):
        check_address("no-such-host.invalid", 8000)


def test_serve_options_from_flags_and_o() -> None:
    values = server_overrides("aiohttp", {"port": 9000, "host": None}, ["queue_size=3"])
    assert values == {"port": 9000, "queue_size": "3"}
    assert server_overrides("aiohttp", {}, ["serve.threads=2", "aiohttp.access_log=false"]) == {
        "threads": "2",
        "access_log": "false",
    }
    with pytest.raises(UsageError, match="KEY=VALUE"):
        server_overrides("aiohttp", {}, ["queue_size"])
    with pytest.raises(UsageError, match="scope"):
        server_overrides("aiohttp", {}, ["pretrain.max_steps=3"])


def test_the_server_is_a_registered_component() -> None:
    [server] = [r for r in Registry.load().components("server") if r.spec.name == "aiohttp"]
    assert server.plugin == "nanochat" and server.spec.options is ServerOptions


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["serve", "--run", "nope"], "run 'nope' does not exist"),
        (["serve", "--workers", "2", "--devices", "cpu"], "not both"),
        (["serve", "-o", "bogus=1"], "unknown option serve.bogus"),
        (["serve", "-o", "max_batch=0"], "serve.max_batch"),
        (["serve", "--server", "nginx"], "nginx"),
    ],
)
def test_serve_errors_are_one_line(args, words, home, monkeypatch, capsys) -> None:
    code, out, err = run_in_process(args, [], monkeypatch, capsys)
    assert code in (1, 2) and words in err and "Traceback" not in err, err

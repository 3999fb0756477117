"""The chat template: exact ids and masks, round trip, completion prompts, reported truncation."""

from __future__ import annotations

import pytest
import torch

from nanochat.core.conversation import (
    ConversationTooLong,
    render_conversation,
    render_for_completion,
    training_pair,
)
from nanochat.core.data import DataError
from nanochat.core.registry import Registry
from nanochat.core.special_tokens import SPECIAL_TOKENS
from nanochat.testing import tokenizer_contract as contract

BOS, US, UE, AS, AE, PS, PE, OS, OE = range(9)
SS, SE = 9, 10


class CharTokenizer:
    """One id per character (100 + code point), specials 0..8 (and 9, 10 with system tokens)."""

    def __init__(self, system_tokens: bool = False):
        names = list(SPECIAL_TOKENS)
        if system_tokens:
            names += ["<|system_start|>", "<|system_end|>"]
        self.special_tokens = {name: i for i, name in enumerate(names)}

    def encode(self, text: str, allowed_special=None) -> list[int]:
        return [100 + ord(c) for c in text]

    def encode_batch(self, texts: list[str], allowed_special=None) -> list[list[int]]:
        return [self.encode(t) for t in texts]


def chars(text: str) -> list[int]:
    return [100 + ord(c) for c in text]


TOOL_CONVERSATION = [
    {"role": "user", "content": "2*3?"},
    {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "ok "},
            {"type": "python", "text": "2*3"},
            {"type": "python_output", "text": "6"},
            {"type": "text", "text": "6"},
        ],
    },
]


def test_multi_turn_exact_ids_and_mask() -> None:
    conversation = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
        {"role": "user", "content": "ok?"},
        {"role": "assistant", "content": "k"},
    ]
    r = render_conversation(CharTokenizer(), conversation)
    assert r.ids == [
        BOS, US, *chars("hi"), UE, AS, *chars("yo"), AE,
        US, *chars("ok?"), UE, AS, *chars("k"), AE,
    ]  # fmt: skip
    assert r.mask == [
        0, 0, 0, 0, 0, 0, 1, 1, 1,
        0, 0, 0, 0, 0, 0, 1, 1,
    ]  # fmt: skip
    assert r.truncated == 0 and r.loss_tokens == 5


def test_tool_call_and_output_exact_ids_and_mask() -> None:
    r = render_conversation(CharTokenizer(), TOOL_CONVERSATION)
    expected = [
        (BOS, 0), (US, 0), *[(c, 0) for c in chars("2*3?")], (UE, 0), (AS, 0),
        *[(c, 1) for c in chars("ok ")],
        (PS, 1), *[(c, 1) for c in chars("2*3")], (PE, 1),
        (OS, 0), (chars("6")[0], 0), (OE, 0),
        (chars("6")[0], 1), (AE, 1),
    ]  # fmt: skip
    assert list(zip(r.ids, r.mask, strict=True)) == expected


def test_system_message_is_merged_without_system_tokens() -> None:
    conversation = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
    ]
    r = render_conversation(CharTokenizer(), conversation)
    assert r.ids == [BOS, US, *chars("Be brief.\n\nhi"), UE, AS, *chars("yo"), AE]
    assert r.mask == [0] * (4 + len("Be brief.\n\nhi")) + [1, 1, 1]


def test_system_message_uses_system_tokens_when_the_tokenizer_has_them() -> None:
    conversation = [
        {"role": "system", "content": "S"},
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "yo"},
    ]
    r = render_conversation(CharTokenizer(system_tokens=True), conversation)
    assert r.ids == [BOS, SS, *chars("S"), SE, US, *chars("hi"), UE, AS, *chars("yo"), AE]
    assert r.mask == [0] * 9 + [1, 1, 1]


def test_render_for_completion_drops_the_last_answer() -> None:
    prompt = render_for_completion(CharTokenizer(), TOOL_CONVERSATION)
    assert prompt == [BOS, US, *chars("2*3?"), UE, AS]
    question_only = render_for_completion(CharTokenizer(), TOOL_CONVERSATION[:1])
    assert question_only == prompt
    with pytest.raises(ConversationTooLong, match="8 tokens"):
        render_for_completion(CharTokenizer(), TOOL_CONVERSATION, max_tokens=5)
    with pytest.raises(DataError):
        render_for_completion(CharTokenizer(), TOOL_CONVERSATION[1:])


def test_truncation_is_reported() -> None:
    full = render_conversation(CharTokenizer(), TOOL_CONVERSATION)
    cut = render_conversation(CharTokenizer(), TOOL_CONVERSATION, max_tokens=10)
    assert cut.ids == full.ids[:10] and cut.mask == full.mask[:10]
    assert cut.truncated == len(full) - 10 > 0
    fits = render_conversation(CharTokenizer(), TOOL_CONVERSATION, max_tokens=len(full))
    assert fits.truncated == 0 and fits.ids == full.ids


def test_training_pair_masks_targets() -> None:
    inputs, targets = training_pair([BOS, US, 7, UE, AS, 8, AE], [0, 0, 0, 0, 0, 1, 1])
    assert inputs == [BOS, US, 7, UE, AS, 8]
    assert targets == [-1, -1, -1, -1, 8, AE]
    with pytest.raises(ValueError):
        training_pair([1, 2], [1])


@pytest.fixture(scope="module")
def real_tokenizer():
    return contract.train_small(Registry.load().create("tokenizer", "rustbpe"), vocab_size=400)


def test_text_round_trip_with_a_real_tokenizer(real_tokenizer) -> None:
    conversation = [
        {"role": "system", "content": "You are nanochat."},
        *TOOL_CONVERSATION,
        {"role": "user", "content": "Thanks, what is your name?"},
        {"role": "assistant", "content": "I am nanochat."},
    ]
    r = render_conversation(real_tokenizer, conversation)
    text = (
        "<|bos|><|user_start|>You are nanochat.\n\n2*3?<|user_end|><|assistant_start|>ok "
        "<|python_start|>2*3<|python_end|><|output_start|>6<|output_end|>6<|assistant_end|>"
        "<|user_start|>Thanks, what is your name?<|user_end|>"
        "<|assistant_start|>I am nanochat.<|assistant_end|>"
    )
    assert real_tokenizer.decode(r.ids) == text
    assert real_tokenizer.encode(text, allowed_special="all") == r.ids
    trained = real_tokenizer.decode([i for i, m in zip(r.ids, r.mask, strict=True) if m])
    assert trained == (
        "ok <|python_start|>2*3<|python_end|>6<|assistant_end|>I am nanochat.<|assistant_end|>"
    )


def test_sft_loss_ignores_masked_positions() -> None:
    """Changing user tokens' targets leaves the sft loss alone; changing assistant ones moves it."""
    from nanochat_stages.chat_batches import pad_rows

    from nanochat.plugins.gpt.factory import GPTFactory
    from nanochat.plugins.gpt.options import GPTOptions

    torch.manual_seed(0)
    factory = GPTFactory(GPTOptions(depth=2, head_dim=64, sequence_len=64))
    model = factory.build(factory.config(512)).eval()
    conversation = [
        {"role": "user", "content": "abc"},
        {"role": "assistant", "content": "de"},
        {"role": "user", "content": "fg"},
        {"role": "assistant", "content": "h"},
    ]
    r = render_conversation(CharTokenizer(), conversation)
    ids = [i % 512 for i in r.ids]
    short = render_conversation(CharTokenizer(), conversation[:2])
    # The real sft batch: two conversations, padded to the longer one.
    inputs, _ = pad_rows([(ids, r.mask), ([i % 512 for i in short.ids], short.mask)], AE)

    def loss_with(target_ids: list[int]) -> float:
        _, targets = pad_rows(
            [(target_ids, r.mask), ([i % 512 for i in short.ids], short.mask)], AE
        )
        with torch.no_grad():
            return model(inputs, targets).item()

    base = loss_with(ids)
    logits = model(inputs).detach()
    _, targets = pad_rows([(ids, r.mask), ([i % 512 for i in short.ids], short.mask)], AE)
    keep = targets >= 0
    by_hand = torch.nn.functional.cross_entropy(logits[keep], targets[keep]).item()
    assert base == pytest.approx(by_hand, rel=1e-5)
    assert keep.sum().item() == r.loss_tokens + short.loss_tokens
    user = [i for i, m in enumerate(r.mask) if m == 0 and i > 0]
    assistant = [i for i, m in enumerate(r.mask) if m == 1]
    changed_user = [(t + 17) % 512 if i in user else t for i, t in enumerate(ids)]
    assert loss_with(changed_user) == base
    changed_assistant = [(t + 17) % 512 if i in assistant else t for i, t in enumerate(ids)]
    assert abs(loss_with(changed_assistant) - base) > 1e-3

"""The `pretrained` tokenizer plugin: a pretrained model's own byte-level BPE, run by HF
`tokenizers`, made by ``nanochat import`` from a ``tokenizer.json`` or a GGUF vocabulary.

The model's special tokens (``<|im_start|>``, ``<|endoftext|>``, ...) are kept by this adapter,
not by the HF tokenizer, so that text containing them stays text unless the caller allows
special tokens. nanochat's own names map onto the model's tokens where the model has one
(``<|bos|>`` = the document separator, ``<|assistant_end|>`` = the end of a reply); the
model's chat template comes along as a :class:`~nanochat.core.conversation.ChatFormat`, so
``render_conversation`` renders the model's format.

Folder layout: ``tokenizer.json`` (the HF tokenizer without its special tokens) and
``pretrained.json`` (``specials``: token to id; ``aliases``: nanochat name to token;
``chat_format``; ``chat_template``: the model's template text, kept for export).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from nanochat.core import special_tokens as st
from nanochat.core.conversation import ChatFormat
from nanochat.plugins.tokenizers.hf_adapter import _unicode_to_byte
from nanochat.plugins.tokenizers.options import TokenizerOptions
from nanochat.plugins.tokenizers.rustbpe_adapter import (
    TokenizerFileError,
    check_meta,
    write_meta,
)

HF_FILE = "tokenizer.json"
PRETRAINED_FILE = "pretrained.json"

CHATML = ChatFormat(
    "chatml",
    {
        st.BOS: "",
        st.SYSTEM_START: "<|im_start|>system\n",
        st.SYSTEM_END: "<|im_end|>\n",
        st.USER_START: "<|im_start|>user\n",
        st.USER_END: "<|im_end|>\n",
        st.ASSISTANT_START: "<|im_start|>assistant\n",
        st.ASSISTANT_END: "<|im_end|>\n",
    },
)
LLAMA3 = ChatFormat(
    "llama3",
    {
        st.BOS: "<|begin_of_text|>",
        st.SYSTEM_START: "<|start_header_id|>system<|end_header_id|>\n\n",
        st.SYSTEM_END: "<|eot_id|>",
        st.USER_START: "<|start_header_id|>user<|end_header_id|>\n\n",
        st.USER_END: "<|eot_id|>",
        st.ASSISTANT_START: "<|start_header_id|>assistant<|end_header_id|>\n\n",
        st.ASSISTANT_END: "<|eot_id|>",
    },
)
# The end-of-reply token and the document separator of each format.
_FORMAT_TOKENS = {
    "chatml": ("<|im_end|>", ("<|endoftext|>", "<|im_start|>")),
    "llama3": ("<|eot_id|>", ("<|begin_of_text|>",)),
}
_DEFAULT_SYSTEM = re.compile(r"<\|im_start\|>system(?:\\n|\n)([^{}<]*?)<\|im_end\|>")


def detect_chat_format(template: str | None, specials: Iterable[str]) -> ChatFormat | None:
    """The chat format of a model from its Jinja chat template (or its special tokens).

    ChatML (``<|im_start|>``) and Llama 3 (``<|start_header_id|>``) are recognised; a ChatML
    template that writes a fixed system message when there is none gives ``default_system``.
    """
    tokens = set(specials)
    text = template or ""
    if "<|im_start|>" in text or (not text and "<|im_start|>" in tokens):
        match = _DEFAULT_SYSTEM.search(text)
        default = match.group(1) if match and match.group(1).strip() else None
        return ChatFormat(CHATML.name, dict(CHATML.markers), default)
    if "<|start_header_id|>" in text or (not text and "<|start_header_id|>" in tokens):
        return LLAMA3
    return None


def choose_aliases(
    specials: dict[str, int],
    fmt: ChatFormat | None,
    bos: str | None,
    eos: str | None,
) -> dict[str, str]:
    """nanochat names mapped onto the model's tokens: ``<|bos|>`` and ``<|assistant_end|>``."""
    aliases: dict[str, str] = {}
    if fmt is not None and fmt.name in _FORMAT_TOKENS:
        end, separators = _FORMAT_TOKENS[fmt.name]
        if end in specials:
            aliases[st.ASSISTANT_END] = end
        for token in separators:
            if token in specials:
                aliases[st.BOS] = token
                break
    if st.BOS not in aliases and bos in specials:
        aliases[st.BOS] = str(bos)
    if st.ASSISTANT_END not in aliases and eos in specials:
        aliases[st.ASSISTANT_END] = str(eos)
    return aliases


class PretrainedTokenizer:
    """A pretrained model's tokenizer: HF `tokenizers` plus the model's special tokens.

    Args:
        hf: the HF tokenizer (without the special tokens as added tokens).
        specials: the model's special tokens, token text to id.
        aliases: nanochat special token names to model tokens (keys of ``specials``).
        chat_format: the model's chat template as a format, if it has a known one.
        chat_template: the model's template text (kept for export).
    """

    implementation = "pretrained"

    def __init__(
        self,
        hf: Any,
        specials: dict[str, int],
        aliases: dict[str, str],
        chat_format: ChatFormat | None = None,
        chat_template: str | None = None,
    ) -> None:
        self.hf = hf
        self.specials = dict(specials)
        self.aliases = {k: v for k, v in aliases.items() if v in self.specials}
        self.chat_format = chat_format
        self.chat_template = chat_template
        self._special = {**self.specials, **{k: self.specials[v] for k, v in self.aliases.items()}}
        names = sorted(self._special, key=len, reverse=True)
        self._special_re = re.compile("|".join(re.escape(s) for s in names)) if names else None
        by_id = {i: t for t, i in self.specials.items()}
        by_id.update({self.specials[v]: k for k, v in self.aliases.items()})
        self._by_id = by_id

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        top = max(self.specials.values(), default=-1) + 1
        return max(self.hf.get_vocab_size(with_added_tokens=True), top)

    @property
    def special_tokens(self) -> dict[str, int]:
        """Special token name to id: the model's own tokens and nanochat names mapped on them."""
        return dict(self._special)

    @property
    def bos_id(self) -> int:
        """The id of ``<|bos|>`` (the model's document separator)."""
        return self._special[st.BOS]

    def encode(self, text: str, allowed_special: str | set[str] | None = None) -> list[int]:
        """Encode one text; special tokens become ids only when allowed."""
        return self.encode_batch([text], allowed_special)[0]

    def encode_batch(
        self, texts: list[str], allowed_special: str | set[str] | None = None
    ) -> list[list[int]]:
        """Encode many texts (HF parallelises the batch)."""
        allowed = set(self._special) if allowed_special == "all" else set(allowed_special or ())
        if not allowed or self._special_re is None:
            return [e.ids for e in self.hf.encode_batch(texts, add_special_tokens=False)]
        return [self._encode_with_specials(text, allowed) for text in texts]

    def _encode_with_specials(self, text: str, allowed: set[str]) -> list[int]:
        assert self._special_re is not None
        ids: list[int] = []
        start = 0
        for match in self._special_re.finditer(text):
            if match.group(0) not in allowed:
                continue
            if match.start() > start:
                ids += self.hf.encode(text[start : match.start()], add_special_tokens=False).ids
            ids.append(self._special[match.group(0)])
            start = match.end()
        if start < len(text):
            ids += self.hf.encode(text[start:], add_special_tokens=False).ids
        return ids

    def decode(self, ids: Iterable[int]) -> str:
        """Decode ids to text; special tokens are written by name (nanochat's where aliased)."""
        out: list[str] = []
        run: list[int] = []
        for i in ids:
            name = self._by_id.get(int(i))
            if name is None:
                run.append(int(i))
                continue
            if run:
                out.append(self.hf.decode(run, skip_special_tokens=False))
                run = []
            out.append(name)
        if run:
            out.append(self.hf.decode(run, skip_special_tokens=False))
        return "".join(out)

    def token_bytes(self) -> list[int]:
        """Byte length of every id; 0 for special tokens."""
        to_byte = _unicode_to_byte()
        lengths = [0] * self.vocab_size
        special_ids = set(self.specials.values())
        for token, index in self.hf.get_vocab(with_added_tokens=True).items():
            if index not in special_ids and index < len(lengths):
                lengths[index] = sum(1 for ch in token if ch in to_byte)
        return lengths

    def hf_json(self) -> dict[str, Any]:
        """The HF ``tokenizer.json`` with the special tokens back as added tokens (as HF tools
        expect them)."""
        data: dict[str, Any] = json.loads(self.hf.to_str())
        added = [
            {
                "id": index,
                "content": token,
                "single_word": False,
                "lstrip": False,
                "rstrip": False,
                "normalized": False,
                "special": True,
            }
            for token, index in sorted(self.specials.items(), key=lambda item: item[1])
        ]
        data["added_tokens"] = added + list(data.get("added_tokens") or [])
        return data

    def bpe_vocabulary(self) -> tuple[list[str], list[str]]:
        """Every token by id and the merges (``"a b"``), for GGUF export.

        Raises:
            TokenizerFileError: the HF model is not BPE.
        """
        model = json.loads(self.hf.to_str())["model"]
        if model.get("type") != "BPE":
            raise TokenizerFileError(f"a {model.get('type')} tokenizer has no BPE merges")
        tokens = [""] * self.vocab_size
        for token, index in model["vocab"].items():
            tokens[index] = token
        for token, index in self.specials.items():
            tokens[index] = token
        merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
        return tokens, merges

    def pre_tokenizer_name(self) -> str:
        """The GGUF name of this tokenizer's pre-tokenizer (``tokenizer.ggml.pre``)."""
        from nanochat.plugins.tokenizers.gguf_vocab import pre_tokenizer_name

        return pre_tokenizer_name(json.loads(self.hf.to_str()).get("pre_tokenizer"))

    def save(self, directory: Path) -> None:
        """Write the HF tokenizer and the special tokens, aliases and chat format."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(directory / HF_FILE))
        record = {
            "specials": self.specials,
            "aliases": self.aliases,
            "chat_format": self.chat_format.to_dict() if self.chat_format else None,
            "chat_template": self.chat_template,
        }
        (directory / PRETRAINED_FILE).write_text(json.dumps(record, indent=1) + "\n")
        write_meta(directory, self.implementation, self.vocab_size)


def from_hf_json(
    data: dict[str, Any],
    chat_template: str | None = None,
    bos: str | None = None,
    eos: str | None = None,
) -> PretrainedTokenizer:
    """A tokenizer from the contents of a HF ``tokenizer.json``: its special added tokens move
    to the adapter, the post-processor (BOS insertion) is dropped.

    Raises:
        TokenizerFileError: HF cannot build it.
    """
    from tokenizers import Tokenizer

    data = dict(data)
    added = list(data.get("added_tokens") or [])
    specials = {str(t["content"]): int(t["id"]) for t in added if t.get("special")}
    data["added_tokens"] = [t for t in added if not t.get("special")]
    data["post_processor"] = None
    try:
        hf = Tokenizer.from_str(json.dumps(data))
    except Exception as exc:  # noqa: BLE001 - HF raises plain Exceptions for bad files
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TokenizerFileError(f"cannot build the HF tokenizer: {first}") from None
    fmt = detect_chat_format(chat_template, specials)
    aliases = choose_aliases(specials, fmt, bos, eos)
    return PretrainedTokenizer(hf, specials, aliases, fmt, chat_template)


class PretrainedFactory:
    """Loads :class:`PretrainedTokenizer` folders (they are made by ``nanochat import``)."""

    def __init__(self, options: TokenizerOptions | None = None) -> None:
        self.options = options

    def train(
        self,
        texts: Iterable[str],
        vocab_size: int,
        special_tokens: list[str],
        progress: Callable[[int, int], None] | None = None,
    ) -> PretrainedTokenizer:
        """Not possible: this tokenizer comes with imported weights.

        Raises:
            TokenizerFileError: always.
        """
        raise TokenizerFileError(
            "the pretrained tokenizer comes with imported weights (`nanochat import PATH`); "
            "it cannot be trained: pass --tokenizer rustbpe or hf-bpe to train one"
        )

    def load(self, directory: Path) -> PretrainedTokenizer:
        """Load a tokenizer saved with :meth:`PretrainedTokenizer.save`."""
        from tokenizers import Tokenizer

        directory = Path(directory)
        check_meta(directory, PretrainedTokenizer.implementation)
        try:
            hf = Tokenizer.from_file(str(directory / HF_FILE))
            record = json.loads((directory / PRETRAINED_FILE).read_text())
            fmt = record.get("chat_format")
            return PretrainedTokenizer(
                hf,
                {str(k): int(v) for k, v in record["specials"].items()},
                dict(record["aliases"]),
                ChatFormat.from_dict(fmt) if fmt else None,
                record.get("chat_template"),
            )
        except Exception as exc:  # noqa: BLE001 - HF raises plain Exceptions for bad files
            first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise TokenizerFileError(
                f"cannot load the pretrained tokenizer from {directory}: {first}"
            ) from None

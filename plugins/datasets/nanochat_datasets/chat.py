"""The local ``chat`` and ``preferences`` datasets: jsonl conversations and the chatterbot demo.

``chat-jsonl`` reads OpenAI-style ``{"messages": [{"role", "content"}]}`` lines and ShareGPT
``{"conversations": [{"from", "value"}]}`` lines; ``preferences-jsonl`` reads the common
``{"prompt", "chosen", "rejected"}`` lines, where each may be a string or a list of messages.
Both stream their files chunk by chunk, line by line; a bad line fails naming its file and line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nanochat.core.data import (
    Conversation,
    DataError,
    ListDataset,
    Message,
    Preference,
    ShardedDataset,
    validate_conversation,
)
from nanochat_datasets import files
from nanochat_datasets.options import DemoOptions, LocalFileOptions
from nanochat_datasets.text import package_dir

SHAREGPT_ROLES = {
    "human": "user",
    "user": "user",
    "gpt": "assistant",
    "assistant": "assistant",
    "chatgpt": "assistant",
    "model": "assistant",
    "bot": "assistant",
    "system": "system",
}


def _content(raw: Any, role: str, where: str) -> Any:
    if isinstance(raw, str):
        return raw
    if isinstance(raw, list) and all(isinstance(p, dict) for p in raw):
        if role == "assistant":
            return [{"type": p.get("type", "text"), "text": p.get("text")} for p in raw]
        return "".join(str(p.get("text", "")) for p in raw)
    raise DataError(f"{where}: message content must be a string or a list of parts")


def to_messages(raw: Any, where: str, require_assistant: bool = True) -> Conversation:
    """Convert OpenAI-style or ShareGPT-style messages to the chat schema.

    Args:
        raw: a list of ``{"role", "content"}`` or ``{"from", "value"}`` dicts.
        where: the file and line, for errors.
        require_assistant: reject a conversation without an assistant message (``False`` for
            the prompt of a preference pair).

    Raises:
        DataError: not a list of messages, or an unknown role.
    """
    if not isinstance(raw, list):
        raise DataError(f"{where}: expected a list of messages")
    messages = []
    for item in raw:
        if not isinstance(item, dict):
            raise DataError(f"{where}: every message must be an object")
        if "from" in item:
            role = SHAREGPT_ROLES.get(str(item["from"]).lower())
            if role is None:
                raise DataError(f"{where}: unknown ShareGPT speaker {item['from']!r}")
            messages.append({"role": role, "content": _content(item.get("value"), role, where)})
        else:
            role = str(item.get("role"))
            messages.append({"role": role, "content": _content(item.get("content"), role, where)})
    return validate_conversation(messages, where, require_assistant)


def record_conversation(record: dict[str, Any], where: str) -> Conversation:
    """The conversation of one jsonl record (``messages`` or ShareGPT ``conversations``)."""
    for key in ("messages", "conversations", "conversation"):
        if key in record:
            return to_messages(record[key], where)
    raise DataError(f"{where}: no 'messages' or 'conversations' field")


class JsonlDataset(ShardedDataset):
    """A dataset over jsonl files, read line by line; ``parse`` turns one record into one item.

    Each chunk of :data:`~nanochat_datasets.files.JSONL_CHUNK_BYTES` of a file is one unit of the
    sharded stream, so memory holds one chunk's items however large the files are. Items are
    shuffled within a chunk and chunks among themselves.
    """

    split_names = ("train", "val")

    def __init__(
        self,
        paths: Sequence[Path],
        name: str,
        val_fraction: float,
        chunk_bytes: int = files.JSONL_CHUNK_BYTES,
    ):
        self.paths = list(paths)
        self.name = name
        self.val_fraction = val_fraction
        self.chunk_bytes = chunk_bytes
        self._units: list[tuple[Path, int]] | None = None

    def parse(self, record: dict[str, Any], where: str) -> Any:
        """One item from one record."""
        raise NotImplementedError

    def units(self, split: str) -> list[tuple[Path, int]]:
        """``(file, chunk)`` of every chunk of every file (train and val split by line)."""
        if self._units is None:
            self._units = [
                (path, chunk)
                for path in self.paths
                for chunk in range(files.jsonl_chunks(path, self.chunk_bytes))
            ]
        return self._units

    def read_unit(self, split: str, unit: tuple[Path, int]) -> list[Any]:
        """The items of one chunk whose stable hash puts them in ``split``."""
        path, chunk = unit
        items = []
        for offset, number, record in files.iter_jsonl_chunk(path, chunk, self.chunk_bytes):
            if files.in_split(f"{path.name}@{offset}", split, self.val_fraction):
                items.append(files.parse_at(self.parse, record, path, offset, number))
        return items


class ChatJsonl(JsonlDataset):
    """Conversations from jsonl files (OpenAI messages or ShareGPT)."""

    kind = "chat"

    def parse(self, record: dict[str, Any], where: str) -> Conversation:
        """The conversation of one record."""
        return record_conversation(record, where)


def _reply(raw: Any, prompt: Conversation, where: str) -> Message:
    if isinstance(raw, str):
        return {"role": "assistant", "content": raw}
    if isinstance(raw, dict):
        raw = [raw]
    messages = to_messages(raw, where)
    if messages[: len(prompt)] == prompt and len(messages) > len(prompt):
        messages = messages[len(prompt) :]
    if len(messages) != 1 or messages[0]["role"] != "assistant":
        raise DataError(f"{where}: chosen and rejected must each be one assistant reply")
    return messages[0]


class PreferencesJsonl(JsonlDataset):
    """Preference pairs from jsonl files: ``prompt`` / ``chosen`` / ``rejected``."""

    kind = "preferences"

    def parse(self, record: dict[str, Any], where: str) -> Preference:
        """The preference pair of one record."""
        missing = [k for k in ("prompt", "chosen", "rejected") if k not in record]
        if missing:
            raise DataError(f"{where}: missing field(s) {', '.join(missing)}")
        raw_prompt = record["prompt"]
        if isinstance(raw_prompt, str):
            prompt: Conversation = [{"role": "user", "content": raw_prompt}]
        else:
            prompt = to_messages(raw_prompt, where, require_assistant=False)
        chosen = _reply(record["chosen"], prompt, where)
        rejected = _reply(record["rejected"], prompt, where)
        return Preference(prompt=prompt, chosen=chosen, rejected=rejected)


def _jsonl_paths(options: LocalFileOptions, name: str) -> list[Path]:
    if not options.path:
        raise DataError(f"{name} needs a path: use {name}:/path/to/file.jsonl")
    return files.resolve_files(options.path, (".jsonl",))


def chat_jsonl(options: LocalFileOptions) -> ChatJsonl:
    """Factory of ``chat-jsonl``."""
    return ChatJsonl(_jsonl_paths(options, "chat-jsonl"), "chat-jsonl", options.val_fraction)


def preferences_jsonl(options: LocalFileOptions) -> PreferencesJsonl:
    """Factory of ``preferences-jsonl``."""
    paths = _jsonl_paths(options, "preferences-jsonl")
    return PreferencesJsonl(paths, "preferences-jsonl", options.val_fraction)


class DemoChat(ListDataset):
    """English conversations of the ``chatterbot-corpus`` package (YAML, read with pyyaml)."""

    kind = "chat"

    def __init__(self, directory: Path, val_fraction: float):
        super().__init__()
        self.name = "demo-chat"
        self.directory = directory
        self.val_fraction = val_fraction

    def load_split(self, split: str) -> list[Conversation]:
        """Every conversation of every English YAML file whose hash puts it in ``split``."""
        import yaml

        items: list[Conversation] = []
        for path in sorted(self.directory.glob("*.yml")):
            try:
                data = yaml.safe_load(path.read_text(encoding="utf-8"))
            except yaml.YAMLError as exc:
                raise DataError(f"{path}: malformed YAML ({exc})") from exc
            for number, turns in enumerate((data or {}).get("conversations") or []):
                if not isinstance(turns, list) or len(turns) < 2:
                    continue
                if not files.in_split(f"{path.name}#{number}", split, self.val_fraction):
                    continue
                roles = ("user", "assistant")
                messages = [{"role": roles[i % 2], "content": str(t)} for i, t in enumerate(turns)]
                items.append(validate_conversation(messages, f"{path} conversation {number}"))
        return items


def demo_chat(options: DemoOptions) -> DemoChat:
    """Factory of ``demo-chat``."""
    return DemoChat(package_dir("chatterbot_corpus") / "data" / "english", options.val_fraction)

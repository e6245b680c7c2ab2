"""Errors that reach the user as one clear line (no traceback), and the one did-you-mean helper."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class MergepipeError(Exception):
    """Any failure caused by the user's input or environment, reported as one line.

    The message names the offending field or file. The CLI prints ``error: <message>`` and
    exits with ``exit_code``.
    """

    exit_code = 2


class ConfigError(MergepipeError):
    """The pipeline config (or a flag overriding it) is invalid."""


class ModelError(MergepipeError):
    """A model reference does not resolve, or the models are not mergeable together."""


class StageFailed(MergepipeError):
    """A stage ran but some of its jobs failed (summary already printed)."""

    exit_code = 1


def close_matches(name: str, choices: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    """The known names closest to ``name`` (best first), for hints on typos."""
    return difflib.get_close_matches(str(name), sorted({str(c) for c in choices}), n=n, cutoff=cutoff)


def did_you_mean(name: str, choices: Iterable[str], n: int = 1, cutoff: float = 0.6,
                 prefix: str = "") -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""`` when none is close.

    ``prefix`` is put before each suggestion (a section path such as ``"evaluate."``).
    """
    found = close_matches(name, choices, n=n, cutoff=cutoff)
    if not found:
        return ""
    return " (did you mean " + ", ".join(f"'{prefix}{f}'" for f in found) + "?)"

"""Errors that reach the user as one clear line (no traceback)."""

from __future__ import annotations


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

"""Errors a user can act on. The CLI prints them without a traceback and exits non-zero."""
from __future__ import annotations


class TuneforgeError(Exception):
    """Base class: `message` says what is wrong and where; `hint` says what to do about it."""

    exit_code = 1

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"


class ConfigError(TuneforgeError):
    """The YAML config or a command-line override is invalid."""

    exit_code = 2


class DataError(TuneforgeError):
    """A dataset file is unreadable or holds invalid rows."""


class ModelSourceError(TuneforgeError):
    """A model source cannot be resolved, fetched, converted or verified."""


class RunError(TuneforgeError):
    """A run directory is missing, incomplete or would be overwritten."""

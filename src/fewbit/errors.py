"""The FewbitError family: user-facing errors that the CLI prints as one line."""

from __future__ import annotations


class FewbitError(Exception):
    """An error a user can act on: the message says what is wrong and what to do."""


class ConfigError(FewbitError, ValueError):
    """An invalid configuration value; the message names the field."""


class DataError(FewbitError):
    """A data source that is missing, malformed, or too small for the request."""


class FewbitFormatError(FewbitError):
    """A file (checkpoint, artifact) that is truncated, corrupt, or of an unknown version."""


class TrainingError(FewbitError):
    """Training could not go on (a NaN loss, a diverged step); the message names the step."""


class InUseError(FewbitError):
    """A run or sweep directory that another process is writing (it holds the directory's lock)."""


class NotResumableError(FewbitError):
    """A run that holds checkpoints none of which can be resumed; nothing in it was changed."""


class LimitError(FewbitError, ValueError):
    """A request for more work or memory than a documented limit allows (see docs/bad-input.md)."""


class NumericError(FewbitError, ValueError):
    """A computation whose values overflowed to NaN or infinity; its results would be meaningless."""

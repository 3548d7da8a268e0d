"""The FewbitError family: user-facing errors that the CLI prints as one line."""

from __future__ import annotations

import re


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


# CSI (`ESC [ ... final`), OSC (`ESC ] ... BEL or ESC \`) and two-character escape sequences.
_ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)?|\x1b[@-Z\\-_]")
_ELLIPSIS = "..."


def shown(text: object, limit: int | None = 80) -> str:
    """`text` (a name, a path, a value a user gave) made safe to echo in a message: terminal escape
    sequences removed; control, format and separator characters (a newline, a bidi override) written
    as escapes (`\\n`, `\\u202e`); a file name's bytes that were not UTF-8 (surrogate-escaped by
    Python) written as `\\xff`; cut in the middle to `limit` characters around `...` (None: whole).

        >>> shown("a\\x1b[31mb\\nc" + "x" * 200, limit=20)
        'ab\\\\ncxxxx...xxxxxxxx'
    """
    text = _ANSI.sub("", str(text))
    if not text.isprintable():
        text = "".join(ch if ch.isprintable() else _escape(ch) for ch in text)
    if limit is not None and len(text) > limit:
        keep = max(0, limit - len(_ELLIPSIS))
        head = (keep + 1) // 2
        text = text[:head] + _ELLIPSIS + text[len(text) - (keep - head):]
    return text


def _escape(ch: str) -> str:
    """One unprintable character as a Python-style escape (a file name's undecodable byte as `\\xNN`)."""
    code = ord(ch)
    if 0xDC80 <= code <= 0xDCFF:  # os.fsdecode's surrogateescape of the byte code - 0xDC00
        return f"\\x{code - 0xDC00:02x}"
    escaped = ch.encode("unicode_escape").decode("ascii")
    return escaped if escaped != ch else f"\\u{code:04x}"

"""What of an artifact may reach the generated C: numbers and identifiers fewbit makes itself.

Text read from a file (a manifest's algorithm or architecture name, a file name) is data, never
code: it reaches the C only as a comment through `comment_text`, which keeps a small set of
characters that cannot end a comment, start a preprocessor line or escape a string. Every other
value written into the C passes `c_token` (a number, a hex float or an identifier), so a hostile
value fails the export instead of becoming code.
"""

from __future__ import annotations

import math
import re
from typing import Any

from fewbit.errors import ConfigError

COMMENT_LIMIT = 64  # characters of read text a comment may quote

_COMMENT_SAFE = re.compile(r"[^A-Za-z0-9 _.,:+=()\[\]-]")
# an integer (with a C suffix), a hex float (`0x1.8p+3f`), a decimal float, or an identifier
_TOKEN = re.compile(
    r"-?(?:0x[0-9a-f]+(?:\.[0-9a-f]*)?p[-+]?[0-9]+f?|[0-9]+(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?[fu]?)|[A-Za-z_][A-Za-z0-9_]*"
)


def comment_text(text: Any) -> str:
    """`text` made safe to stand inside a C block comment: characters outside letters, digits and
    ` _.,:+=()[]-` become `?`, and it is cut to COMMENT_LIMIT characters (with `...`)."""
    flat = _COMMENT_SAFE.sub("?", str(text))
    return flat if len(flat) <= COMMENT_LIMIT else flat[: COMMENT_LIMIT - 3] + "..."


def c_token(value: Any, what: str) -> str:
    """`value` as one C token (a number or an identifier fewbit generated); ConfigError naming
    `what` for anything else, such as text that came from an artifact."""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return double_literal(value)
    text = str(value)
    if not _TOKEN.fullmatch(text):
        raise ConfigError(f"C export: {what} is not a number or identifier ({comment_text(text)!r}); "
                          "the artifact is malformed")
    return text


def float_literal(v: float) -> str:
    """A float32 C literal that reads back bit for bit (hex float)."""
    if not math.isfinite(v):
        raise ConfigError("C export: a weight or parameter is not finite")
    return f"{v.hex()}f" if v != 0 else "0.0f"


def double_literal(v: float) -> str:
    """A double C literal that reads back bit for bit (hex float)."""
    if not math.isfinite(v):
        raise ConfigError("C export: a parameter is not finite")
    return v.hex() if v != 0 else "0.0"

"""What reaches the terminal, a report or a table is text: one helper renders untrusted strings.

Names come from edgeq.toml, file names, ONNX graphs and bundles; any of them may hold an escape
sequence (``ESC[2J`` clears the screen), a newline (a forged second ``error:`` line), a bidi
override or a name of a million characters. ``shown`` renders one name: control and format
characters written as escapes (``\\x1b``, ``\\n``, ``\\u202e``), a very long name cut with a marker.
``printable`` renders a whole message the same way, cutting only runs without spaces that are
longer than any real name or path.
"""

from __future__ import annotations

import re
import unicodedata

__all__ = ["MAX_MESSAGE", "MAX_NAME", "MAX_RUN", "printable", "shown"]

MAX_NAME = 120  # characters of one name in a message, table or report
MAX_RUN = 400  # characters of one space-free run in a whole message (paths are shorter)
MAX_MESSAGE = 4000  # characters of one whole message

_ESCAPES = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escaped(ch: str) -> str:
    if ch in _ESCAPES:
        return _ESCAPES[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _unsafe(ch: str) -> bool:
    # Cc: C0/C1 controls (ESC, newline, DEL, CSI); Cf: format (bidi overrides, zero-width);
    # Zl/Zp: line and paragraph separators; Cs: lone surrogates (from undecodable file names).
    return unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs")


def _escape(text: str) -> str:
    if text.isprintable() and text.isascii():
        return text
    return "".join(_escaped(c) if _unsafe(c) else c for c in text)


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...[{len(text) - limit} more characters]"


def shown(value: object, limit: int = MAX_NAME) -> str:
    """One untrusted name as text: escapes for control/format characters, cut at ``limit`` characters."""
    text = value if isinstance(value, str) else str(value)
    return _escape(_cut(text, limit))


_RUN = re.compile(rf"\S{{{MAX_RUN + 1},}}")


def printable(message: str) -> str:
    """A whole message as one line of text: escapes as in ``shown``; space-free runs over MAX_RUN cut."""
    text = _RUN.sub(lambda m: _cut(m.group(0), MAX_RUN), message)
    return _escape(_cut(text, MAX_MESSAGE))

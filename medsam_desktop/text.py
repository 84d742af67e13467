"""One line of text for the user, the one home of that rule: whitespace and newlines collapsed to single spaces,
a traceback reduced to its last line, long text cut with "...". Every message the CLIs, dialogs, the status bar
and the self-test show goes through here."""

from __future__ import annotations


def one_line(text: object, limit: int | None = None) -> str:
    """``text`` on one line (at most ``limit`` characters, ending in ``...`` when cut)."""
    text = str(text)
    if "Traceback (most recent call last)" in text:
        text = text.strip().splitlines()[-1]
    text = " ".join(text.split())
    return text if limit is None or len(text) <= limit else text[: limit - 3] + "..."


def exception_line(exc: BaseException, limit: int | None = None, with_type: bool = False) -> str:
    """An exception as one line: its text (its class name when it has none), ``Type: text`` with ``with_type``."""
    text = one_line(exc, None)
    if not text:
        return type(exc).__name__
    line = f"{type(exc).__name__}: {text}" if with_type else text
    return one_line(line, limit)

"""Helpers shared by the ``medsam-*`` command-line tools.

* exit codes: :data:`EXIT_OK` (0), :data:`EXIT_FAILURE` (1: ran, but something failed),
  :data:`EXIT_USAGE` (2: bad arguments, as argparse uses);
* :func:`setup_logging`: ``prog: level: message`` lines on stderr, written through
  ``tqdm.write`` so they do not tear an active progress bar;
* :func:`report_error` / :func:`one_line`: one-line error messages, no traceback;
* :func:`progress`: a tqdm bar on stderr, off with ``--quiet`` or when stderr is not a TTY;
* :func:`parse_args`: ``argparse`` parsing that returns an exit code instead of raising.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TypeVar

from tqdm import tqdm

from ..text import one_line as text_one_line

__all__ = [
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "add_common_arguments",
    "describe_exception",
    "fail",
    "one_line",
    "parse_args",
    "progress",
    "report_error",
    "setup_logging",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

PACKAGE_LOGGER = "medsam_desktop"

T = TypeVar("T")


class _TqdmHandler(logging.Handler):
    """Writes records to the *current* ``sys.stderr`` via ``tqdm.write``."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # pragma: no cover - logging must never raise
            self.handleError(record)


class _Formatter(logging.Formatter):
    def __init__(self, prog: str, show_traceback: bool) -> None:
        super().__init__()
        self.prog = prog
        self.show_traceback = show_traceback

    def format(self, record: logging.LogRecord) -> str:
        line = f"{self.prog}: {record.levelname.lower()}: {one_line(record.getMessage())}"
        if self.show_traceback and record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def setup_logging(prog: str, verbose: int = 0, quiet: bool = False) -> logging.Logger:
    """Route the package's log records to stderr as ``prog: level: message``.

    Level: WARNING with ``quiet``, DEBUG with ``verbose >= 1`` (tracebacks shown),
    INFO otherwise. Idempotent: a previous handler installed by this function is replaced.
    Returns the package logger (``medsam_desktop``).
    """
    logger = logging.getLogger(PACKAGE_LOGGER)
    for handler in [h for h in logger.handlers if isinstance(h, _TqdmHandler)]:
        logger.removeHandler(handler)
    handler = _TqdmHandler()
    handler.setFormatter(_Formatter(prog, show_traceback=verbose >= 1))
    logger.addHandler(handler)
    logger.setLevel(logging.WARNING if quiet else logging.DEBUG if verbose >= 1 else logging.INFO)
    logger.propagate = False
    return logger


def one_line(message: object) -> str:
    """``message`` as a single line (:func:`medsam_desktop.text.one_line`)."""
    return text_one_line(message)


def describe_exception(exc: BaseException) -> str:
    """``"ExceptionType: message"`` on one line (just the message for OSError/ValueError)."""
    text = one_line(exc) or type(exc).__name__
    if isinstance(exc, (OSError, ValueError, KeyError)):
        return text
    return f"{type(exc).__name__}: {text}"


def report_error(prog: str, message: object) -> None:
    """Write ``prog: error: message`` as one line on stderr."""
    tqdm.write(f"{prog}: error: {one_line(message)}", file=sys.stderr)


def fail(prog: str, message: object) -> int:
    """Report ``message`` as one error line and return :data:`EXIT_FAILURE` (``return fail(PROG, ...)``)."""
    report_error(prog, message)
    return EXIT_FAILURE


def progress(
    iterable: Iterable[T], *, total: int | None = None, desc: str | None = None, quiet: bool = False
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm bar on stderr; disabled if ``quiet`` or stderr is no TTY."""
    stream = sys.stderr
    enabled = not quiet and hasattr(stream, "isatty") and stream.isatty()
    return iter(
        tqdm(iterable, total=total, desc=desc, file=stream, disable=not enabled, leave=False, dynamic_ncols=True)
    )


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``-q/--quiet`` and ``-v/--verbose`` to ``parser``."""
    parser.add_argument(
        "-q", "--quiet", action="store_true", help="no progress bar, only warnings and errors on stderr"
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="debug logging, with tracebacks for failures"
    )


def parse_args(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> tuple[argparse.Namespace | None, int]:
    """Parse ``argv``; returns ``(namespace, EXIT_OK)`` or ``(None, exit_code)``.

    ``--help`` gives ``(None, 0)``; an argparse usage error (already printed) gives
    ``(None, EXIT_USAGE)``.
    """
    try:
        return parser.parse_args(argv), EXIT_OK
    except SystemExit as exc:  # argparse exits on --help and on usage errors
        code = exc.code
        return None, code if isinstance(code, int) else (EXIT_OK if code is None else EXIT_USAGE)


def run_main(
    prog: str,
    parser: argparse.ArgumentParser,
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None,
    expected: tuple[type[BaseException], ...],
) -> int:
    """The shape of every tool's ``main``: parse, set up logging, ``run(args)``; an ``expected`` error is its
    message on one line, anything else the exception on one line (traceback with ``-v``). Returns the exit code."""
    args, code = parse_args(parser, argv)
    if args is None:
        return code
    setup_logging(prog, args.verbose, args.quiet)
    try:
        return run(args)
    except expected as exc:
        return fail(prog, str(exc))
    except Exception as exc:  # unexpected: still one line, never a half-written file
        logging.getLogger(prog).debug("unexpected failure", exc_info=True)
        return fail(prog, describe_exception(exc))

"""Logging for the `longshort` logger: a rich console on stderr plus a plain ``<run_dir>/log.txt``.

Both handlers mask credentials (`longshort.core.redact`) so a token pasted into a config or an environment variable never
reaches a terminal scrollback, a log file, or W&B's captured console output.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from rich.console import Console
from rich.logging import RichHandler

from longshort.core.errors import LongshortError
from longshort.core.redact import scrub_text

LOGGER_NAME = "longshort"
LOG_FILE = "log.txt"
CONSOLE_FORMAT = "[%(asctime)s] %(levelname)-7s %(message)s"
FILE_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
_ROLE = "_longshort_role"  # attribute that marks the handlers this module owns


class RedactFilter(logging.Filter):
    """Masks secrets in the formatted message (and traceback text) of every record a handler emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = scrub_text(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and not record.exc_text:
            record.exc_text = scrub_text(logging.Formatter().formatException(record.exc_info))
        return True


def _parse_level(level: str | int | None, current: int) -> int:
    if level is None:
        return current or logging.INFO
    if isinstance(level, int) and not isinstance(level, bool):
        return level
    name = str(level).strip().upper()
    if name == "WARN":
        name = "WARNING"
    if name not in _LEVELS:
        raise LongshortError(f"log level {level!r} is not a level; accepted: {', '.join(_LEVELS)} (any case)")
    return getattr(logging, name)


def _owned(logger: logging.Logger, role: str) -> list[logging.Handler]:
    return [h for h in logger.handlers if getattr(h, _ROLE, None) == role]


class _StderrHandler(logging.StreamHandler):
    """Plain lines to whatever ``sys.stderr`` is now (pytest and Ray swap it after handlers are made)."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


_verbose = False
METRICS_LOGGER = "longshort.metrics"


def set_verbose(on: bool) -> None:
    """``longshort -v``: DEBUG level, and the per-step metric lines on the console too (always in ``log.txt``)."""
    global _verbose
    _verbose = on
    logging.getLogger(LOGGER_NAME).setLevel(logging.DEBUG if on else logging.INFO)


def verbose() -> bool:
    """Whether ``-v`` was given (third-party progress bars and notices stay on)."""
    return _verbose


class _ConsoleQuiet(logging.Filter):
    """The console shows one line per step (the stage's own); the tracker's full metric lines go to ``log.txt``."""

    def filter(self, record: logging.LogRecord) -> bool:
        return _verbose or record.name != METRICS_LOGGER or record.levelno >= logging.WARNING


def _console_handler() -> logging.Handler:
    # Rich for a person at a terminal; plain lines when stderr is a pipe or file (Ray worker logs, CI), where rich
    # would wrap or pad every line to a fixed width.
    if Console(stderr=True).is_terminal:
        handler: logging.Handler = RichHandler(
            console=Console(stderr=True), show_path=False, markup=False, rich_tracebacks=False, log_time_format="[%X]"
        )
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter(CONSOLE_FORMAT, datefmt="%H:%M:%S"))
    return handler


def setup_logging(run_dir: str | Path | None = None, level: str | int | None = "INFO") -> logging.Logger:
    """Configure the ``longshort`` logger; safe to call any number of times.

    Ensures exactly one console handler and, when ``run_dir`` is given, exactly one file handler appending to
    ``<run_dir>/log.txt`` (a different ``run_dir`` moves it; ``None`` leaves an existing file handler alone).
    ``level=None`` keeps the current level (INFO if unset). The logger does not propagate, so hosts that configure
    the root logger (Ray, pytest) do not print each line twice.
    """
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG if _verbose else _parse_level(level, logger.level))
    logger.propagate = False
    if not _owned(logger, "console"):
        handler = _console_handler()
        setattr(handler, _ROLE, "console")
        handler.addFilter(RedactFilter())
        handler.addFilter(_ConsoleQuiet())
        logger.addHandler(handler)
    if run_dir is not None:
        path = (Path(run_dir) / LOG_FILE).resolve()
        current = _owned(logger, "file")
        if not (current and Path(current[0].baseFilename) == path):  # type: ignore[attr-defined]
            for handler in current:
                logger.removeHandler(handler)
                handler.close()
            path.parent.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(path, mode="a", encoding="utf-8")
            handler.setFormatter(logging.Formatter(FILE_FORMAT, datefmt="%Y-%m-%d %H:%M:%S"))
            setattr(handler, _ROLE, "file")
            handler.addFilter(RedactFilter())
            logger.addHandler(handler)
    return logger


def close_log_file() -> None:
    """Detach and close the ``log.txt`` handler (end of a run in a long-lived process, e.g. tests or notebooks)."""
    logger = logging.getLogger(LOGGER_NAME)
    for handler in _owned(logger, "file"):
        logger.removeHandler(handler)
        handler.close()


def get_logger(name: str) -> logging.Logger:
    """The ``longshort.<name>`` logger (``__name__`` of a longshort module works as is)."""
    return logging.getLogger(
        name if name == LOGGER_NAME or name.startswith(LOGGER_NAME + ".") else f"{LOGGER_NAME}.{name}"
    )

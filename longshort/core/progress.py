"""Progress bars: one display for the whole pipeline, or a bar of its own when a stage runs alone.

Rich allows one live display per console, so stages never start their own ``Progress`` while ``longshort run`` holds
the pipeline's: ``bar()`` adds a row to the shared display when there is one. Bars are drawn only at a terminal;
in CI and Ray job logs the stages' log lines say the same thing without control characters.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

_shared: Progress | None = None


def _columns():
    return (TextColumn("{task.fields[label]:<10}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.description}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn())


def shown() -> bool:
    return sys.stderr.isatty()


class Bar:
    """A row of a progress display; a no-op when nothing is drawn."""

    def __init__(self, progress: Progress | None, task: TaskID | None):
        self.progress, self.task = progress, task

    def update(self, completed: float | None = None, total: float | None = None, description: str | None = None) -> None:
        if self.progress is not None:
            kw = {k: v for k, v in (("completed", completed), ("total", total), ("description", description))
                  if v is not None}
            self.progress.update(self.task, **kw)

    def advance(self, n: float = 1) -> None:
        if self.progress is not None:
            self.progress.advance(self.task, n)


@contextmanager
def bar(label: str, total: float | None, completed: float = 0, show: bool = True) -> Iterator[Bar]:
    """A progress row: a task of the pipeline's display when one is up, else a transient display of its own."""
    if not show or not shown():
        yield Bar(None, None)
        return
    if _shared is not None:
        task = _shared.add_task("", total=total, completed=completed, label=label)
        try:
            yield Bar(_shared, task)
        finally:
            _shared.remove_task(task)
        return
    with Progress(*_columns(), transient=True, console=Console(stderr=True)) as own:
        yield Bar(own, own.add_task("", total=total, completed=completed, label=label))


@contextmanager
def pipeline_display() -> Iterator[Progress | None]:
    """The one display of ``longshort run``: its own row plus whichever stage rows are active."""
    global _shared
    if not shown() or _shared is not None:
        yield None
        return
    with Progress(*_columns(), console=Console(stderr=True)) as progress:
        _shared = progress
        try:
            yield progress
        finally:
            _shared = None

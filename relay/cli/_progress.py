"""Progress for long CLI work (prune, exports): a rich spinner with a running count on
stderr, shown only when stderr is a terminal, so stdout stays clean for pipes and --json."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import Progress, SpinnerColumn, TextColumn


@contextmanager
def progress(describe: Callable[[], str], enabled: bool = True) -> Iterator[Callable[[], None]]:
    """Yields `refresh()`: call it after each batch; `describe()` gives the current text."""
    console = Console(stderr=True)
    show = enabled and sys.stderr.isatty()
    with Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        console=console,
        disable=not show,
        transient=True,
    ) as bar:
        task = bar.add_task(describe())

        def refresh() -> None:
            bar.update(task, description=describe())

        yield refresh

"""Rich progress display driven by the harness's single progress callback."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


class RichProgress:
    """One bar per stage; ``update(stage, advance, total)`` is the callback."""

    def __init__(self, console: Console | None = None, transient: bool = False) -> None:
        self.progress = Progress(
            TextColumn("[bold]{task.description:<18}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console or Console(stderr=True),
            transient=transient,
        )
        self.tasks: dict[str, int] = {}
        self.progress.start()

    def update(self, stage: str, advance: float, total: float) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        task = self.tasks[stage]
        self.progress.update(task, total=total)
        self.progress.advance(task, advance)

    def set(self, stage: str, completed: float, total: float) -> None:
        if stage not in self.tasks:
            self.tasks[stage] = self.progress.add_task(stage, total=total)
        self.progress.update(self.tasks[stage], completed=completed, total=total)

    def close(self) -> None:
        self.progress.stop()

"""The one way tuneforge makes a rich console.

Rich word-wraps printed text at the console width, which is 80 columns whenever output is not a terminal (CI logs,
`| tee`, test runners). A long run path or file name then gets split mid-name and can no longer be copied, and the
same message reads differently depending on where the run lives. ``soft_wrap`` leaves line breaking to the
terminal; tables and progress bars still size themselves to the width.
"""
from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text


def make_console(*, stderr: bool = True, quiet: bool = False) -> Console:
    """Messages and progress go to stderr by default, so stdout stays clean for tables and piped results."""
    return Console(stderr=stderr, quiet=quiet, soft_wrap=True)


class ItemsPerSecondColumn(ProgressColumn):
    """Mean items per second since the task started.

    rich's own speed column formats bytes, and its windowed speed needs several updates before it shows anything,
    which an evaluation of a few large batches may never give it.
    """

    def render(self, task: Task) -> Text:
        elapsed = task.elapsed
        if not elapsed or not task.completed:
            return Text("-- items/s", style="progress.data.speed")
        return Text(f"{task.completed / elapsed:.2f} items/s", style="progress.data.speed")


def make_progress(enabled: bool) -> Progress:
    """The progress bar every evaluation loop uses; `enabled=False` keeps it silent (tests, nested calls)."""
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        ItemsPerSecondColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        disable=not enabled,
    )

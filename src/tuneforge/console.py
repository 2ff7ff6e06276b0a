"""The one way tuneforge makes a rich console.

Rich word-wraps printed text at the console width, which is 80 columns whenever output is not a terminal (CI logs,
`| tee`, test runners). A long run path or file name then gets split mid-name and can no longer be copied, and the
same message reads differently depending on where the run lives. ``soft_wrap`` leaves line breaking to the
terminal; tables and progress bars still size themselves to the width.
"""
from __future__ import annotations

from rich.console import Console


def make_console(*, stderr: bool = True, quiet: bool = False) -> Console:
    """Messages and progress go to stderr by default, so stdout stays clean for tables and piped results."""
    return Console(stderr=stderr, quiet=quiet, soft_wrap=True)

"""What a compression shows while it runs: a bar on a terminal, plain lines everywhere.

Like training's progress (`prunus.engine.progress`): on a terminal a rich bar advances per layer
of the DE search (sparsity and KL in its text) and per fine-tune step; every finished DE cycle,
fine-tune tenth and the bit allocation print one line (cycles, candidates scored, losses), so logs
and pipelines that are not terminals still show where a long compression is. Disabled, it does
nothing.

Example:
    >>> p = CompressProgress(True, interactive=False)
    >>> p.start("DE search", 4)
    >>> p.line("DE cycle 1/2: sparsity 0.2500")
    DE cycle 1/2: sparsity 0.2500
    >>> p.stop()
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["CompressProgress"]


class CompressProgress:
    """Progress of one compression (see the module docstring).

    Args:
        enabled: Show anything at all.
        interactive: Draw a rich bar; default: when stdout is a terminal.
    """

    def __init__(self, enabled: bool, *, interactive: bool | None = None) -> None:
        self.enabled = bool(enabled)
        self.interactive = self.enabled and (sys.stdout.isatty() if interactive is None else interactive)
        self._bar: Any = None
        self._task: Any = None

    def start(self, what: str, total: int, done: int = 0) -> None:
        """A new phase of `total` steps (`done` of them already done, as on a resume)."""
        if not self.interactive:
            return
        if self._bar is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), transient=True
            )
            self._bar.start()
        if self._task is not None:
            self._bar.remove_task(self._task)
        self._task = self._bar.add_task(what, total=total, completed=done)

    def advance(self, text: str) -> None:
        """One step of the phase, with what the bar says now."""
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=1, description=text)

    def line(self, text: str) -> None:
        """One line of record (above the bar on a terminal, printed otherwise)."""
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.console.print(text, highlight=False)
        else:
            print(text, flush=True)

    def stop(self) -> None:
        """End the bar (lines stay)."""
        if self._bar is not None:
            self._bar.stop()
        self._bar = self._task = None

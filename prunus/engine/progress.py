"""What a run shows and records: a progress bar (or plain lines) and metrics.jsonl.

The bar is drawn with rich when stdout is a terminal; otherwise (CI, pipes, log files) one plain
line per epoch is printed so logs stay readable. Only rank 0 shows or writes anything.
"""

from __future__ import annotations

import sys
from typing import Any

from prunus.formats.run_dir import RunDir

__all__ = ["MetricsLog", "Progress"]


class MetricsLog:
    """A run's `metrics.jsonl` (`RunDir.metrics`), one JSON record per epoch, only ever replaced atomically.

    Every append rewrites the file through a temporary file and a rename, so a kill leaves the
    old or the new file, a symlink at the path is replaced rather than followed, and the log can
    always be rebuilt from the checkpoint's history (`rewrite`, which resume uses: an epoch that
    was checkpointed but not logged before a crash is logged, one logged but not checkpointed is
    dropped). Reading is `RunDir.read_metrics`, the one reader of every metrics log.
    """

    def __init__(self, run: RunDir | None) -> None:
        self.run = run
        self._records: list[dict[str, Any]] | None = None

    def records(self) -> list[dict[str, Any]]:
        if self.run is None:
            return []
        if self._records is None:
            self._records = self.run.read_metrics()
        return list(self._records)

    def rewrite(self, records: list[dict[str, Any]]) -> None:
        """Replace the log with exactly `records`."""
        if self.run is None:
            return
        self.run.write_metrics(records)
        self._records = list(records)

    def truncate(self, epoch: int) -> None:
        """Drop the records of epochs >= `epoch`."""
        if self.run is not None and self.run.metrics.exists():
            self.rewrite([r for r in self.records() if r.get("epoch", -1) < epoch])

    def append(self, record: dict[str, Any]) -> None:
        if self.run is not None:
            self.rewrite([*self.records(), record])


class Progress:
    """Per-step bar with loss/accuracy/ETA on a TTY; one summary line per epoch otherwise."""

    def __init__(self, total_epochs: int, steps_per_epoch: int, enabled: bool = True) -> None:
        self.enabled = enabled
        self.total_epochs = total_epochs
        self.steps_per_epoch = steps_per_epoch
        self.interactive = enabled and sys.stdout.isatty()
        self._bar = None
        self._task = None

    def __enter__(self) -> Progress:
        if self.interactive:
            from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeRemainingColumn
            from rich.progress import Progress as RichProgress

            self._bar = RichProgress(
                TextColumn("[bold]epoch {task.fields[epoch]}/{task.fields[epochs]}"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]:.4f} acc {task.fields[acc]:.3f}"),
                TimeRemainingColumn(),
                transient=False,
            )
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def start_epoch(self, epoch: int) -> None:
        if self._bar is None:
            return
        fields = {"epoch": epoch + 1, "epochs": self.total_epochs, "loss": 0.0, "acc": 0.0}
        if self._task is None:
            self._task = self._bar.add_task("train", total=self.steps_per_epoch, **fields)
        else:  # one bar for the whole run; finished epochs are summarised as printed lines above it
            self._bar.reset(self._task, total=self.steps_per_epoch, **fields)

    def step(self, loss: float, acc: float) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.update(self._task, advance=1, loss=loss, acc=acc)

    def end_epoch(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        keys = ("train_loss", "train_acc", "val_acc", "test_acc", "lr", "seconds")
        parts = [f"{k}={record[k]:.4g}" for k in keys if isinstance(record.get(k), (int, float))]
        line = f"epoch {record['epoch'] + 1}/{self.total_epochs} " + " ".join(parts)
        if self._bar is not None:
            self._bar.console.print(line, highlight=False)
        else:
            print(line, flush=True)

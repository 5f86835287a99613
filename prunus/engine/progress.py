"""What a run shows and records: a progress bar (or plain lines) and metrics.jsonl.

The bar is drawn with rich when stdout is a terminal; otherwise (CI, pipes, log files) one plain
line per epoch is printed so logs stay readable. Only rank 0 shows or writes anything.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from prunus._atomic import write_text

__all__ = ["MetricsLog", "Progress"]


class MetricsLog:
    """Append-only `metrics.jsonl`, one JSON record per epoch.

    `truncate(epoch)` drops records of epochs >= `epoch` (used when resuming, so an epoch that
    was logged but not checkpointed before a crash is not recorded twice).
    """

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None

    def records(self) -> list[dict[str, Any]]:
        if self.path is None or not self.path.exists():
            return []
        lines = self.path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def truncate(self, epoch: int) -> None:
        if self.path is None or not self.path.exists():
            return
        kept = [r for r in self.records() if r.get("epoch", -1) < epoch]
        write_text(self.path, "".join(json.dumps(r) + "\n" for r in kept))

    def append(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


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

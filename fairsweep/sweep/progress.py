"""Progress of a sweep: trials done / running / failed, elapsed and ETA. A live bar on a terminal,
one plain line per finished trial otherwise (CI, logs)."""

from __future__ import annotations

import time

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.progress import Progress as RichProgress


class Progress:
    def __init__(self, total: int, already_done: int = 0, console: Console | None = None):
        self.console = console or Console()
        self.total, self.done, self.running, self.failed = total, already_done, 0, 0
        self.already_done = already_done
        self.started = time.time()
        self._live = None
        if self.console.is_terminal:
            self._live = RichProgress(TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(),
                                      TextColumn("{task.fields[status]}"), TimeElapsedColumn(),
                                      TextColumn("eta"), TimeRemainingColumn(), console=self.console)
            self._task = self._live.add_task("sweep", total=total, completed=already_done, status=self._status())
            self._live.start()
        elif already_done:
            self.console.print(f"{already_done}/{total} trials already finished; resuming")

    def _status(self) -> str:
        return f"running {self.running} failed {self.failed}"

    def _refresh(self) -> None:
        if self._live is not None:
            self._live.update(self._task, completed=self.done + self.failed, status=self._status())

    def trial_started(self) -> None:
        self.running += 1
        self._refresh()

    def trial_done(self, name: str, metrics: dict) -> None:
        self.done += 1
        self.running = max(0, self.running - 1)
        self._refresh()
        if self._live is None:
            elapsed = time.time() - self.started
            finished_now = self.done + self.failed - self.already_done
            eta = elapsed / finished_now * (self.total - self.done - self.failed)
            self.console.print(f"[{self.done + self.failed}/{self.total}] {name}  acc={metrics['acc']:.4f}  "
                               f"worst_group_acc={metrics['worst_group_acc']:.4f}  "
                               f"(elapsed {elapsed:.0f}s, eta {eta:.0f}s)", highlight=False, soft_wrap=True)

    def trial_failed(self, name: str) -> None:
        self.failed += 1
        self.running = max(0, self.running - 1)
        self._refresh()
        if self._live is None:
            self.console.print(f"[{self.done + self.failed}/{self.total}] {name} failed", highlight=False)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()

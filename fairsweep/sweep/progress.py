"""Progress of a sweep: trials done / running / pending / failed, stages trained vs reused, the best
value so far of each followed metric, elapsed time and ETA. A live display on a terminal, one plain
line per finished trial otherwise (CI, logs)."""

from __future__ import annotations

import math
import signal
import time

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn
from rich.progress import Progress as RichProgress
from rich.text import Text

GRID_OBJECTIVES = {"acc": "max", "worst_group_acc": "max"}  # what a grid sweep's progress follows


class Progress:
    """`objectives` maps the metrics to follow to `max` or `min`: a search's objectives, by default
    those of a grid sweep."""

    def __init__(self, total: int, already_done: int = 0, console: Console | None = None,
                 objectives: dict[str, str] | None = None):
        self.console = console or Console()
        self.objectives = objectives or GRID_OBJECTIVES
        self.total, self.done, self.running, self.failed = total, already_done, 0, 0
        self.already_done = already_done
        self.stages = {"trained": 0, "reused": 0}  # over the trials finished by this invocation
        self.best: dict[str, float] = {}
        self.started = time.time()
        self._live = None
        if self.console.is_terminal:
            self._bar = RichProgress(TextColumn("[bold]trials"), BarColumn(), MofNCompleteColumn(),
                                     TextColumn("elapsed"), TimeElapsedColumn(), console=self.console)
            self._task = self._bar.add_task("sweep", total=total, completed=already_done)
            self._live = Live(Group(self._bar, _StatusLines(self)), console=self.console, refresh_per_second=4)
            self._live.start()
        elif 0 < already_done < total:
            self.console.print(f"{already_done}/{total} trials already finished; resuming")

    @property
    def pending(self) -> int:
        return max(0, self.total - self.done - self.failed - self.running)

    def eta_seconds(self) -> float:
        """Remaining trials times the mean time of the trials finished by this invocation (nan before any)."""
        finished_now = self.done + self.failed - self.already_done
        if finished_now <= 0:
            return math.nan
        return (time.time() - self.started) / finished_now * (self.total - self.done - self.failed)

    def status_lines(self) -> list[str]:
        """The live display's lines under the bar."""
        best = "  ".join(f"{m} {self.best[m]:.4g}" if m in self.best else f"{m} —" for m in self.objectives)
        eta = self.eta_seconds()
        return [f"done {self.done}  running {self.running}  pending {self.pending}  failed {self.failed}    "
                f"stages trained {self.stages['trained']}  reused {self.stages['reused']}    "
                f"eta {'—' if math.isnan(eta) else f'{eta:.0f}s'}",
                f"best: {best}"]

    def _refresh(self) -> None:
        if self._live is not None:
            self._bar.update(self._task, completed=self.done + self.failed)

    def interrupted(self, signum: int) -> None:
        """The first SIGINT or SIGTERM: say what happens now and how to stop at once."""
        name = signal.Signals(signum).name
        again = "Ctrl-C again" if signum == signal.SIGINT else f"{name} again"
        self.console.print(f"{name}: stopping the sweep: no more trials start, running ones stop (their stages "
                           f"resume from their last epoch checkpoint), finished ones are kept ({again} stops at "
                           "once)", highlight=False, soft_wrap=True)

    def trial_started(self) -> None:
        self.running += 1
        self._refresh()

    def trial_skipped(self) -> None:
        """A trial found finished (a search reusing an earlier evaluation): counted, not timed."""
        self.done += 1
        self.already_done += 1
        self._refresh()

    def trial_done(self, name: str, metrics: dict, trained: dict[str, bool] | None = None) -> None:
        self.done += 1
        self.running = max(0, self.running - 1)
        for was_trained in (trained or {}).values():
            self.stages["trained" if was_trained else "reused"] += 1
        for metric, direction in self.objectives.items():
            value = metrics.get(metric, math.nan)
            if not math.isfinite(value):
                continue
            best = self.best.get(metric)
            if best is None or (value > best if direction == "max" else value < best):
                self.best[metric] = value
        self._refresh()
        if self._live is None:
            elapsed = time.time() - self.started
            shown = "  ".join(f"{m}={metrics.get(m, math.nan):.4f}" for m in self.objectives)
            self.console.print(f"[{self.done + self.failed}/{self.total}] {name}  {shown}  "
                               f"(elapsed {elapsed:.0f}s, eta {self.eta_seconds():.0f}s)", highlight=False,
                               soft_wrap=True)

    def trial_failed(self, name: str) -> None:
        self.failed += 1
        self.running = max(0, self.running - 1)
        self._refresh()
        if self._live is None:
            self.console.print(f"[{self.done + self.failed}/{self.total}] {name} failed", highlight=False)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()


class _StatusLines:
    """Rendered afresh at each refresh of the live display."""

    def __init__(self, progress: Progress):
        self.progress = progress

    def __rich__(self) -> Text:
        return Text("\n".join(self.progress.status_lines()))

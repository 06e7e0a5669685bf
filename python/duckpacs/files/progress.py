"""Progress of long work (import, export, scans): a one-line display, a summary, a JSON report.

On a terminal (stderr is a tty) one status line is redrawn at most a few times a second:

    import  1,204/5,000 files 24% | 412 files/s 35.2 MB/s | ETA 0:09 | 3 rejected

When stderr is not a terminal (a pipe, a log file, cron) nothing is drawn: scripts read the
final summary and the ``--report FILE.json`` written by :func:`write_report`, which lists
every rejected input with its reason.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from duckpacs.files.sources import Reject

MB = 1_000_000


def _eta(seconds: float) -> str:
    seconds = max(0, int(seconds + 0.5))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


@dataclass
class Summary:
    """Totals of a finished (or interrupted) run."""

    label: str
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    rejected: list[Reject] = field(default_factory=list)
    interrupted: bool = False

    @property
    def files_per_second(self) -> float:
        return self.files / self.seconds if self.seconds > 0 else 0.0

    @property
    def mb_per_second(self) -> float:
        return self.bytes / MB / self.seconds if self.seconds > 0 else 0.0

    def line(self) -> str:
        """The human summary printed at the end of a run."""
        state = "interrupted after" if self.interrupted else "done:"
        return (
            f"{self.label} {state} {self.files:,} files, {self.bytes / MB:,.1f} MB in "
            f"{self.seconds:.1f} s ({self.files_per_second:,.0f} files/s, "
            f"{self.mb_per_second:,.1f} MB/s), {len(self.rejected):,} rejected"
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "files": self.files,
            "bytes": self.bytes,
            "seconds": round(self.seconds, 3),
            "files_per_second": round(self.files_per_second, 1),
            "mb_per_second": round(self.mb_per_second, 2),
            "rejected_count": len(self.rejected),
            "interrupted": self.interrupted,
        }


class Progress:
    """Counts work done and draws a status line on a terminal.

    Parameters
    ----------
    label:
        First word of the line and of the summary (``import``, ``scans``...).
    total_files, total_bytes:
        Expected totals when known (percent and ETA need one of them).
    stream:
        Where to draw; stderr by default.
    enabled:
        Draw or not; by default only when ``stream`` is a terminal.
    min_interval:
        Seconds between redraws.
    clock:
        Time source (monotonic seconds), replaceable in tests.
    """

    def __init__(
        self,
        label: str = "import",
        *,
        total_files: int | None = None,
        total_bytes: int | None = None,
        stream: TextIO | None = None,
        enabled: bool | None = None,
        min_interval: float = 0.2,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.total_files = total_files
        self.total_bytes = total_bytes
        self.min_interval = min_interval
        self.clock = clock
        self.summary = Summary(label)
        self._start = clock()
        self._last_draw = float("-inf")
        self._width = 0
        self._finished = False
        # The reading thread and the storing thread of an import both report here.
        self._lock = threading.RLock()

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self.finish(interrupted=exc_type is not None)

    def advance(self, nbytes: int = 0, *, files: int = 1) -> None:
        """Record ``files`` inputs done, ``nbytes`` bytes read."""
        with self._lock:
            self.summary.files += files
            self.summary.bytes += nbytes
            self._maybe_draw()

    def reject(self, path: str, reason: str) -> None:
        """Record an input that was refused (counted in the line, listed in the report)."""
        with self._lock:
            self.summary.rejected.append(Reject(path, reason))
            self._maybe_draw()

    def status_line(self) -> str:
        """The current status line (also used by tests and non-terminal callers)."""
        s = self.summary
        elapsed = max(self.clock() - self._start, 1e-9)
        parts = [s.label]
        if self.total_files:
            pct = 100 * s.files / self.total_files
            parts.append(f"{s.files:,}/{self.total_files:,} files {pct:.0f}%")
        else:
            parts.append(f"{s.files:,} files")
        rate = f"{s.files / elapsed:,.0f} files/s {s.bytes / MB / elapsed:,.1f} MB/s"
        line = f"{'  '.join(parts)} | {rate}"
        eta = self._eta_seconds(elapsed)
        if eta is not None:
            line += f" | ETA {_eta(eta)}"
        if s.rejected:
            line += f" | {len(s.rejected):,} rejected"
        return line

    def _eta_seconds(self, elapsed: float) -> float | None:
        s = self.summary
        if self.total_bytes and s.bytes:
            return elapsed * (self.total_bytes - s.bytes) / s.bytes
        if self.total_files and s.files:
            return elapsed * (self.total_files - s.files) / s.files
        return None

    def _maybe_draw(self) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if now - self._last_draw < self.min_interval:
            return
        self._last_draw = now
        line = self.status_line()
        pad = max(0, self._width - len(line))
        self.stream.write("\r" + line + " " * pad)
        self.stream.flush()
        self._width = len(line)

    def finish(self, *, interrupted: bool = False) -> Summary:
        """Stop the clock, clear the status line; return the totals (idempotent)."""
        if not self._finished:
            self._finished = True
            self.summary.seconds = self.clock() - self._start
            self.summary.interrupted = interrupted
            if self.enabled and self._width:
                self.stream.write("\r" + " " * self._width + "\r")
                self.stream.flush()
        return self.summary


def write_report(
    path: str | os.PathLike[str], summary: Summary, extra: dict[str, Any] | None = None
) -> Path:
    """Write the JSON report of a run: totals and every rejected input with its reason.

    The file is written to a temporary name and renamed, so a reader never sees half of it.
    """
    target = Path(path)
    report: dict[str, Any] = {
        "summary": summary.as_json(),
        "rejected": [{"path": r.path, "reason": r.reason} for r in summary.rejected],
    }
    if extra:
        report.update(extra)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    tmp.replace(target)
    return target

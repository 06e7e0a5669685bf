"""Progress display, summary and JSON report of long runs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from duckpacs.files.progress import Progress, write_report


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_quiet_when_not_a_terminal() -> None:
    stream = io.StringIO()
    with Progress(stream=stream, total_files=10) as p:
        for _ in range(10):
            p.advance(1000)
    assert stream.getvalue() == ""
    assert p.summary.files == 10 and p.summary.bytes == 10_000


def test_terminal_line_rates_eta_and_rejects() -> None:
    clock = FakeClock()
    stream = Tty()
    p = Progress("import", total_files=100, total_bytes=100_000_000, stream=stream, clock=clock)
    assert p.enabled
    for _ in range(25):
        clock.now += 0.1
        p.advance(1_000_000)
    p.reject("/data/x.txt", "not DICOM")
    line = p.status_line()
    assert "25/100 files 25%" in line
    assert "10 files/s" in line and "10.0 MB/s" in line
    assert "ETA 0:07" in line or "ETA 0:08" in line  # 75 MB left at 10 MB/s
    assert "1 rejected" in line
    drawn = stream.getvalue()
    assert drawn.startswith("\r") and "files/s" in drawn
    # Redrawn at most every 0.2 s of the (fake) clock: 2.5 s -> about 13 draws, not 26.
    assert drawn.count("\r") <= 14
    summary = p.finish()
    assert stream.getvalue().endswith("\r")  # line cleared for the summary
    assert summary.seconds == pytest.approx(2.5)
    assert "25 files" in summary.line() and "1 rejected" in summary.line()
    assert p.finish() is summary


def test_interrupted_run_is_marked() -> None:
    clock = FakeClock()
    try:
        with Progress(stream=io.StringIO(), clock=clock) as p:
            p.advance(10)
            raise KeyboardInterrupt
    except KeyboardInterrupt:
        pass
    assert p.summary.interrupted
    assert "interrupted after" in p.summary.line()


def test_report_lists_every_rejected_file(tmp_path: Path) -> None:
    p = Progress(stream=io.StringIO())
    p.advance(2048)
    for i in range(3):
        p.reject(f"/in/file{i}", f"reason {i}")
    target = write_report(tmp_path / "report.json", p.finish(), extra={"stored": 1})
    report = json.loads(target.read_text())
    assert report["summary"]["files"] == 1
    assert report["summary"]["rejected_count"] == 3
    assert report["rejected"] == [
        {"path": f"/in/file{i}", "reason": f"reason {i}"} for i in range(3)
    ]
    assert report["stored"] == 1
    assert not (tmp_path / "report.json.tmp").exists()

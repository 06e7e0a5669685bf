"""Helpers shared by the import-scans and migrate tests (archive mode)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def holding_index(data: Path, seconds: float) -> Iterator[None]:
    """Another process owns ``data``'s index read-write for ``seconds`` (as `serve` does)."""
    data.mkdir(parents=True, exist_ok=True)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from duckpacs.index import Index; "
            f"i = Index.open({str(data)!r}); print('held', flush=True); "
            "time.sleep(float(sys.argv[1])); i.close()",
            str(seconds),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None
    try:
        assert holder.stdout.readline().strip() == "held"
        yield
    finally:
        holder.wait(timeout=seconds + 30)
        holder.stdout.close()

"""``DATA/backup.json``: the last completed backup of this data folder, and its age.

Written by ``duckpacs backup`` once its manifest is durable (so it never names a backup that
did not complete); read by the admin page's storage panel, which warns when the last backup
is older than ``backup.warn_days`` (or there is none).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

STATUS_FILE = "backup.json"
_KEPT = ("destination", "finished_at", "generation", "bytes_copied", "bytes_total", "seconds")


def record(data_dir: Path, summary: dict[str, Any]) -> None:
    """Note a completed backup (temporary file and rename: never half written)."""
    doc = {key: summary[key] for key in _KEPT}
    doc["finished_at_epoch"] = time.time()
    path = Path(data_dir) / STATUS_FILE
    tmp = path.with_name(STATUS_FILE + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def last(data_dir: Path) -> dict[str, Any] | None:
    """The last completed backup's record, None when there is none (or it is unreadable)."""
    try:
        doc = json.loads((Path(data_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "finished_at_epoch" in doc else None


def age(data_dir: Path, warn_days: int, now: float | None = None) -> dict[str, Any]:
    """The storage panel's backup figures: when, where, how old, and whether to warn
    (no backup at all, or one older than ``warn_days``; 0 never warns)."""
    doc = last(data_dir)
    seconds = None if doc is None else max(0.0, (now or time.time()) - doc["finished_at_epoch"])
    stale = bool(warn_days) and (seconds is None or seconds > warn_days * 86400)
    return {
        "backup_at": None if doc is None else doc.get("finished_at"),
        "backup_age_seconds": None if seconds is None else round(seconds),
        "backup_destination": None if doc is None else doc.get("destination"),
        "backup_bytes": None if doc is None else doc.get("bytes_total"),
        "backup_warn_days": warn_days,
        "backup_stale": stale,
    }

"""The audit trail: one JSON line per access to patient data (who, what, when, from where).

The file is opened with ``O_APPEND`` and each record is written with one ``write`` call, so
records from concurrent requests never interleave and nothing is ever rewritten or read back
(a damaged line left by a crash or a full disk stops nothing). A record that cannot be written
is reported in the server's log and the request goes on. Rotation is left to the operator
(``logrotate`` with ``copytruncate`` works).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

# In the data folder: the web layer's accesses and the storage policy's removals.
AUDIT_FILENAME = "audit.log"
log = logging.getLogger("duckpacs.audit")


class AuditLog:
    """Append-only JSON-lines audit log."""

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o600)
        self._lock = threading.Lock()
        self._end_torn_line()

    def _end_torn_line(self) -> None:
        """A last line cut short (a crash, a full disk) is closed off, so the next record
        starts a line of its own and stays readable."""
        size = os.fstat(self._fd).st_size
        if size and os.pread(self._fd, 1, size - 1) != b"\n":
            os.write(self._fd, b"\n")

    def record(
        self,
        *,
        user: str,
        client: str | None,
        method: str,
        path: str,
        status: int,
        query: str = "",
        auth: str = "",
        **what: Any,
    ) -> None:
        """Append one record; ``what`` carries the UIDs touched when known."""
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "user": user,
            "auth": auth,
            "from": client or "",
            "method": method,
            "path": path,
            "status": status,
        }
        if query:
            entry["query"] = query
        entry.update({k: v for k, v in what.items() if v})
        self._append(entry)

    def event(self, event: str, **fields: Any) -> None:
        """A record that is not a request: a lockout after wrong passwords, say."""
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "event": event,
        }
        entry.update(fields)
        self._append(entry)

    def _append(self, entry: dict[str, Any]) -> None:
        # ensure_ascii: any text (undecodable path bytes too) becomes one valid JSON line.
        line = (json.dumps(entry, separators=(",", ":"), default=str) + "\n").encode()
        with self._lock:
            try:
                if self._fd < 0:
                    raise OSError("the audit log is closed")
                os.write(self._fd, line)
            except OSError as e:
                log.error("audit record not written: %s: %s", self.path, e)

    def close(self) -> None:
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

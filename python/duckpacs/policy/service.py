"""The storage policy in ``serve``: one thread checking the limits every few seconds and the
retention rules every hour (and once at start, before any arrival)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from duckpacs import logs
from duckpacs.archive import layout
from duckpacs.archive.facade import Archive
from duckpacs.config import Settings
from duckpacs.policy import retention
from duckpacs.policy.protect import Protections
from duckpacs.policy.quota import Limits, Quota, usage
from duckpacs.web.audit import AUDIT_FILENAME, AuditLog

log = logs.get("policy")

CHECK_INTERVAL = 2.0
RETENTION_INTERVAL = 3600.0


class PolicyService:
    """Limits, recycling and retention over the server's archive."""

    def __init__(
        self, settings: Settings, archive: Archive, pending: Callable[[], set[str]]
    ) -> None:
        data = settings.data_dir
        self.settings = settings
        self.archive = archive
        self.protections = Protections(data / layout.POLICY_DB)
        self.pending = pending
        self.audit = AuditLog(data / AUDIT_FILENAME)
        self.limits = Limits(
            settings["archive.max_bytes"],
            settings["archive.min_free_bytes"],
            settings["archive.on_limit"],
        )
        self.quota = Quota(archive, data, self.limits, self.audit, self.spared)
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="policy", daemon=True)

    def spared(self) -> set[str]:
        """Studies no policy removes: protected ones, and those still being forwarded."""
        return self.protections.studies() | self.pending()

    def start(self) -> None:
        retention.check(self.archive, self.settings.retention)
        self._step(retention_due=True)  # before the listeners: a full archive refuses at once
        self._thread.start()

    def _run(self) -> None:
        waited = 0.0
        while not self._stopping.wait(CHECK_INTERVAL):
            waited += CHECK_INTERVAL
            due = waited >= RETENTION_INTERVAL
            if due:
                waited = 0.0
            self._step(retention_due=due)

    def _step(self, *, retention_due: bool) -> None:
        try:
            if retention_due and self.settings.retention:
                retention.apply(self.archive, self.audit, self.settings.retention, self.spared)
            self.quota.check()
        except Exception as e:  # noqa: BLE001 (logged; the next check tries again)
            logs.event(log, "storage policy check failed", reason=e, level=40)

    def status(self) -> dict[str, Any]:
        u = usage(self.archive, self.settings.data_dir)
        return {
            **u.as_json(),
            "max_bytes": self.limits.max_bytes,
            "min_free_bytes": self.limits.min_free_bytes,
            "on_limit": self.limits.mode,
            "refusing": self.quota.refusing,
            "protected": len(self.protections.studies()),
        }

    def stop(self) -> None:
        self._stopping.set()
        if self._thread.is_alive():
            self._thread.join(timeout=60)
        self.audit.close()

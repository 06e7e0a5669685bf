"""Storage limits: ``archive.max_bytes`` and ``archive.min_free_bytes``, and what happens at
them (``archive.on_limit``).

- ``max_bytes`` bounds the bytes the archive's instances take in the store (their records,
  compressed: the index's sum of record lengths), so a removal counts at once.
- ``min_free_bytes`` is the free space to keep on the data folder's disk.

``refuse``: while a limit is passed every arrival is refused, 0xA700 (Refused: Out of
Resources, PS3.4 B.2.3) over C-STORE and 507 over STOW-RS, through
:meth:`~duckpacs.archive.facade.Archive.refuse`; arrivals resume once back within.

``recycle``: the studies whose newest instance arrived longest ago are removed, oldest
first, until back within the limits; protected studies and studies with instances still
waiting to be forwarded are never removed. Removed records are dead space in the store's
packs until ``duckpacs compact`` rewrites them (with the server stopped), so for
``min_free_bytes`` the recycler counts that dead space as free, and refuses arrivals when
the disk's real free space falls below half of ``min_free_bytes``: time to compact. If
nothing is left to remove, arrivals are refused too.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from duckpacs import logs
from duckpacs.archive import layout
from duckpacs.archive.facade import Archive
from duckpacs.policy.removal import Removed, remove_study
from duckpacs.web.audit import AuditLog

log = logs.get("policy")

CANDIDATES = 16  # oldest studies fetched per round of recycling


@dataclass(frozen=True)
class Limits:
    max_bytes: int
    min_free_bytes: int
    mode: str  # refuse or recycle

    @property
    def active(self) -> bool:
        return bool(self.max_bytes or self.min_free_bytes)


@dataclass(frozen=True)
class Usage:
    """Where the archive stands: live store bytes, pack files on disk, the disk's free space."""

    stored: int
    on_disk: int
    free: int

    @property
    def reclaimable(self) -> int:
        """Dead bytes in the packs (removed instances, spent records) until compaction."""
        return max(0, self.on_disk - self.stored)

    def as_json(self) -> dict[str, int]:
        return {"stored_bytes": self.stored, "pack_bytes": self.on_disk,
                "free_bytes": self.free, "reclaimable_bytes": self.reclaimable}  # fmt: skip


def usage(archive: Archive, data_dir: Path) -> Usage:
    store = layout.store_dir(data_dir)
    on_disk = 0
    for folder, _dirs, files in os.walk(store):
        for name in files:
            if name.endswith(".dpk"):
                try:
                    on_disk += os.stat(os.path.join(folder, name)).st_size
                except FileNotFoundError:  # a pack compaction removed meanwhile
                    continue
    stats = os.statvfs(store if store.is_dir() else data_dir)
    return Usage(archive.index.stored_bytes(), on_disk, stats.f_bavail * stats.f_frsize)


def size_text(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def breach(u: Usage, limits: Limits) -> str | None:
    """Which limit is passed (as a reason for the log and the refusal), or None."""
    if limits.max_bytes and u.stored > limits.max_bytes:
        return (f"archive.max_bytes reached: {size_text(u.stored)} stored, "
                f"limit {size_text(limits.max_bytes)}")  # fmt: skip
    if limits.min_free_bytes:
        free = u.free + (u.reclaimable if limits.mode == "recycle" else 0)
        if free < limits.min_free_bytes:
            return (f"archive.min_free_bytes reached: {size_text(u.free)} free, "
                    f"keeping {size_text(limits.min_free_bytes)}")  # fmt: skip
    return None


class Quota:
    """Applies the limits to one archive (called every few seconds by the policy thread)."""

    def __init__(
        self,
        archive: Archive,
        data_dir: Path,
        limits: Limits,
        audit: AuditLog,
        spared: Callable[[], set[str]],
    ) -> None:
        self.archive = archive
        self.data_dir = data_dir
        self.limits = limits
        self.audit = audit
        self.spared = spared  # () -> set of study UIDs never to recycle
        self.refusing: str | None = None

    def check(self) -> list[Removed]:
        """Refuse, recycle or resume as the limits say; returns the studies removed."""
        if not self.limits.active:
            return []
        u = usage(self.archive, self.data_dir)
        reason = breach(u, self.limits)
        removed: list[Removed] = []
        if reason is not None and self.limits.mode == "recycle":
            removed, u, reason = self._recycle(u, reason)
        if reason is None and self.limits.mode == "recycle":
            reason = self._disk_floor(u)
        self._refuse(reason)
        return removed

    def _recycle(self, u: Usage, reason: str) -> tuple[list[Removed], Usage, str | None]:
        removed: list[Removed] = []
        current: str | None = reason
        while current is not None:
            spared = set(self.spared())
            oldest = self.archive.index.studies_oldest_first(CANDIDATES, sorted(spared))
            if not oldest:
                return removed, u, current + "; nothing left to recycle (protected or waiting)"
            for study, _last, _bytes, _count in oldest:
                removed.append(
                    remove_study(self.archive, self.audit, study, policy="recycle", reason=current)
                )
                u = usage(self.archive, self.data_dir)
                current = breach(u, self.limits)
                if current is None:
                    break
        return removed, u, None

    def _disk_floor(self, u: Usage) -> str | None:
        floor = self.limits.min_free_bytes // 2
        if floor and u.free < floor:
            return (f"the disk has {size_text(u.free)} free, under half of archive.min_free_bytes; "
                    f"{size_text(u.reclaimable)} of removed studies return to it at "
                    "`duckpacs compact`")  # fmt: skip
        return None

    def _refuse(self, reason: str | None) -> None:
        if reason == self.refusing:
            return
        self.archive.refuse(reason)
        if reason is None:
            logs.event(log, "storage back within its limits; accepting instances again")
        else:
            logs.event(log, "refusing new instances", reason=reason, level=30)
        self.refusing = reason

"""The background densifier of ``duckpacs serve`` (docs/STORAGE-FORMAT.md, "Densifying").

Large frames arrive in the store's cheap arrival encoding so that ingest is not bound by
the dense encoder; this thread rewrites them in the dense one while nothing arrives. It
waits until the store's writer has appended nothing for ``idle`` seconds, then does one
small step (:meth:`duckpacs._core.Store.densify_step`, about ``budget`` bytes on one
thread) and looks again, so an arrival waits behind at most one step. The thread runs at
the lowest CPU priority. The index follows every move (:meth:`Archive.relocate`) before the
store lets the moved records count as indexed.

A backup (:mod:`duckpacs.backup`) holds it with :meth:`Densifier.pause` while it copies
packs: densifying deletes the packs it rewrites, and a backup must not copy one that is
half replaced. Arrivals are never paused: appends do not disturb a copy.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from duckpacs import logs
from duckpacs.archive.facade import Archive
from duckpacs.errors import DuckpacsError

log = logs.get("densify")


class Densifier:
    """Densifies the archive's store while no instance arrives (see the module docstring)."""

    def __init__(
        self,
        archive: Archive,
        *,
        idle: float = 1.0,
        budget: int = 2 << 20,
        poll: float = 0.2,
        rest: float = 30.0,
    ) -> None:
        self.archive = archive
        self.idle = idle
        self.budget = budget
        self.poll = poll
        self.rest = rest
        self._stop = threading.Event()
        # Moves (and records to settle) of a finished pack the index has not applied yet.
        self._owed: tuple[list[Any], list[Any]] | None = None
        self.bytes_in = 0  # stored bytes densified (read from the victims) so far
        self._pauses = 0  # holders of pause() not yet released
        self._stepping = False
        self._held = threading.Condition()
        self._thread = threading.Thread(target=self._run, name="densify", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stops after the step under way (each is short)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def pause(self) -> Callable[[], None]:
        """Stop densifying until the returned release is called (more than once is fine):
        returns once the step under way, if any, has finished. A job started before it
        stays open (its victim intact, its output past the journal's start uncommitted)."""
        with self._held:
            self._pauses += 1
            while self._stepping:
                self._held.wait()
        released = threading.Event()

        def release() -> None:
            with self._held:
                if not released.is_set():
                    released.set()
                    self._pauses -= 1
                    self._held.notify_all()

        return release

    @property
    def paused(self) -> bool:
        with self._held:
            return self._pauses > 0

    def _begin_step(self) -> bool:
        with self._held:
            if self._pauses:
                return False
            self._stepping = True
            return True

    def _end_step(self) -> None:
        with self._held:
            self._stepping = False
            self._held.notify_all()

    def _run(self) -> None:
        _lowest_priority()
        store = self.archive.store_backend
        seen, quiet_since = store.appends, time.monotonic()
        while not self._stop.is_set():
            now, appends = time.monotonic(), store.appends
            if appends != seen:
                seen, quiet_since = appends, now
            if now - quiet_since < self.idle or not self._begin_step():
                self._stop.wait(self.poll)
                continue
            try:
                worked = self._step()
            finally:
                self._end_step()
            if not worked:
                # Nothing to do (or an error logged): rest, but wake for new arrivals.
                deadline = time.monotonic() + self.rest
                while store.appends == seen and time.monotonic() < deadline:
                    if self._stop.wait(self.poll):
                        return

    def _step(self) -> bool:
        """One step; True when it did some work."""
        store = self.archive.store_backend
        try:
            if self._owed is not None:  # a relocation that failed: retried first
                self._apply(*self._owed)
                return True
            step = store.densify_step(self.budget)
            self.bytes_in += step["bytes_in"]
            self._apply(step["moved"], step["settle"])
        except DuckpacsError as e:
            logs.event(log, "densifying paused", reason=e, level=30)
            return False
        for pack, reason in step["skipped"]:
            logs.event(log, "pack left in the arrival encoding", pack=pack, reason=reason,
                       level=30)  # fmt: skip
        if step["packs"]:
            logs.event(log, "pack densified", instances=len(step["moved"]),
                       pending_mb=round(step["pending_bytes"] / 1e6, 1))  # fmt: skip
        return bool(step["bytes_in"] or step["scanned"] or step["packs"])

    def _apply(self, moved: list[Any], settle: list[Any]) -> None:
        """The index follows the moves, then the store may count the new records as
        indexed; owed until both are done."""
        self._owed = (moved, settle)
        if moved:
            self.archive.relocate(moved)
        self.archive.store_backend.settle(settle)
        self._owed = None


def _lowest_priority() -> None:
    """Nice 19 for this thread only (Linux: a thread id is a PRIO_PROCESS target)."""
    # Not Linux, or not allowed: it runs at normal priority.
    with contextlib.suppress(AttributeError, OSError):
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)

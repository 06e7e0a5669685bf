"""The uploader of ``duckpacs serve`` on object storage (``[store] backend = "s3"``, issue 26).

A node writes its packs on its own disk exactly as an embedded archive does: an arrival is
acknowledged once it is durable there. This thread makes those packs readable by the other
nodes:

- **seal**: once the store has appended something and ``store.seal_seconds`` have passed,
  the open pack is closed, so that it can be uploaded (a sealed pack never changes again);
- **upload**: :meth:`duckpacs._core.Store.upload_step` uploads every sealed pack the bucket
  does not hold whole, and records each confirmed upload durably, so a node killed
  mid-upload uploads again at its next start whatever was not confirmed;
- **back-pressure**: while the sealed bytes waiting for upload exceed ``store.max_pending_bytes``
  (the bucket is down or slow), arrivals are refused with 0xA700 / 507 through
  :meth:`Archive.refuse_for`, and accepted again once the backlog drains;
- **eviction** (``store.local_bytes`` above 0): once this node's packs take more of its disk
  than that, the oldest packs the bucket holds whole and the index covers to their end are
  removed from the disk (:meth:`duckpacs._core.Store.evict_step`) and read from the bucket
  from then on, so a node's disk holds its newest packs, not everything it ever received;
- **heartbeat**: this node's row in the index's ``nodes`` table says what is pending and
  how much of the read cache is used (``duckpacs cluster status``).
"""

from __future__ import annotations

import threading
import time
from typing import Any

from duckpacs import logs
from duckpacs.archive.facade import Archive
from duckpacs.errors import DuckpacsError

log = logs.get("upload")

REFUSAL = "uploads to object storage are behind"
STEP_BYTES = 256 << 20


class Uploader:
    """Seals, uploads and reports this node's packs (see the module docstring)."""

    def __init__(
        self,
        archive: Archive,
        *,
        seal_seconds: float,
        max_pending_bytes: int,
        local_bytes: int = 0,
        poll: float = 0.25,
        heartbeat: float = 5.0,
    ) -> None:
        self.archive = archive
        self.store: Any = archive.store_backend
        self.seal_seconds = seal_seconds
        self.max_pending_bytes = max_pending_bytes
        self.local_bytes = local_bytes
        self.poll = poll
        self.heartbeat_every = heartbeat
        self.last: dict[str, Any] = {}
        self._stop = threading.Event()
        self._sealed_at_appends = self.store.appends
        self._unsealed_since: float | None = time.monotonic()  # a reopened pack may be open
        self._failing: str | None = None
        self._refusing = False
        self._beat_at = 0.0
        self._next_step = 0.0  # monotonic time of the next step: at once at start
        self._thread = threading.Thread(target=self._run, name="upload", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stops the thread, then seals and uploads once more (bounded by the client's own
        timeouts): a clean stop leaves nothing for the next start."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        try:
            self.store.seal()
            self._step()
        except DuckpacsError as e:
            logs.event(log, "uploads left for the next start", reason=e)

    def _run(self) -> None:
        while not self._stop.wait(self.poll):
            try:
                self._maybe_seal()
                if time.monotonic() >= self._next_step:
                    self._step()
                self._maybe_beat()
            except DuckpacsError as e:
                self._report_failure(str(e))
            except Exception as e:  # noqa: BLE001 - the thread must outlive any one failure
                log.exception("upload step failed")
                self._report_failure(str(e))

    def _maybe_seal(self) -> None:
        appends = self.store.appends
        now = time.monotonic()
        if appends != self._sealed_at_appends and self._unsealed_since is None:
            self._unsealed_since = now
        if self._unsealed_since is not None and now - self._unsealed_since >= self.seal_seconds:
            self.store.seal()
            self._sealed_at_appends = appends
            self._unsealed_since = None
            self._next_step = 0.0  # the sealed pack goes up at once

    def _step(self) -> None:
        # A bounded step: a stop (or a seal) never waits behind a whole backlog.
        rep = dict(self.store.upload_step(STEP_BYTES))
        self.last = rep
        self._next_step = time.monotonic() + self._pause_after(rep)
        if rep["error"]:
            self._report_failure(rep["error"])
        elif self._failing is not None:
            logs.event(log, "object storage reachable again", uploaded=rep["uploaded"])
            self._failing = None
        self._apply_backpressure(int(rep["sealed_pending_bytes"]))
        if self.local_bytes > 0 and not rep["error"]:
            self._evict()

    @staticmethod
    def _pause_after(rep: dict[str, Any]) -> float:
        """A step lists every pack, so it runs after a seal, at once again while sealed
        packs wait, every second while the bucket fails, and every half minute otherwise
        (packs a compaction removed leave the bucket then)."""
        if rep["error"]:
            return 1.0
        return 0.0 if int(rep["sealed_pending_bytes"]) > 0 else 30.0

    def _evict(self) -> None:
        # The index's own marks: a pack goes only once every record in it is indexed, so a
        # catch-up after a crash never needs an evicted pack.
        marks = {int(p): int(o) for p, o in self.archive.index.marks().items()}
        rep = dict(self.store.evict_step(self.local_bytes, marks))
        if rep["evicted"]:
            logs.event(log, "packs evicted to the bucket", packs=rep["evicted"],
                       bytes=rep["bytes"], local_bytes=rep["local_bytes"])  # fmt: skip

    def _apply_backpressure(self, pending: int) -> None:
        over = pending > self.max_pending_bytes
        if over != self._refusing:
            self._refusing = over
            reason = f"{REFUSAL} ({pending} bytes waiting)" if over else None
            self.archive.refuse_for("uploads", reason)
            logs.event(
                log,
                "refusing arrivals: uploads behind" if over else "accepting arrivals again",
                pending_bytes=pending,
                limit=self.max_pending_bytes,
            )

    def _report_failure(self, reason: str) -> None:
        if reason != self._failing:
            log.warning("object storage unreachable, packs stay on local disk: %s", reason)
            self._failing = reason

    def _maybe_beat(self) -> None:
        now = time.monotonic()
        if now - self._beat_at < self.heartbeat_every:
            return
        self._beat_at = now
        heartbeat = getattr(self.archive.index, "heartbeat", None)
        if heartbeat is None:
            return
        cache = self.store.remote_stats() or {}
        try:
            heartbeat(
                pending_packs=int(self.last.get("pending_packs", 0)),
                pending_bytes=int(self.last.get("pending_bytes", 0)),
                cache_bytes=int(cache.get("cache_bytes", 0)),
                cache_limit=int(cache.get("cache_limit", 0)),
            )
        except DuckpacsError as e:
            logs.event(log, "heartbeat not recorded", reason=e)

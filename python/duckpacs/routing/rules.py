"""The routing rules (``[[route]]``) over the index: which new instances go where.

The rules read the index in the order instances were indexed (``iid``), from a cursor kept
in the queue file and advanced in the same transaction as the jobs it produced, so a kill
loses no arrival and queues none twice. Every way in counts (C-STORE, STOW-RS, ``import``,
``migrate``): a rule sees what the index holds, and ``CallingAE`` tells them apart.

Matching is C-FIND's (PS3.4 C.2.2.2: wildcards, ranges, lists) on any attribute, at image
level, by the index's own query compiler; ``CallingAE`` matches the AE title that sent the
instance. A rule with ``trigger = "instance"`` queues each matching instance. One with
``trigger = "stable-study"`` watches the study of each matching instance and queues the
whole study once no instance of it has arrived for ``stable_seconds``; an instance that
arrives for the study later watches it again, and then only the newcomers go.

A correction (``duckpacs modify``, ``merge-patient``, HL7 A08/A40) gives the instances it
changes new index rows, which the rules read like arrivals. They are not forwarded again:
the destinations already hold the instance under that SOP Instance UID, and most keep the
first copy of a UID they have (as we do), so a resend would be refused or would silently
differ from site to site. ``duckpacs send`` pushes the corrected study where it is wanted.
The rules know a correction's row by its SOP Instance UID and received time, which the
corrections journal names (:mod:`duckpacs.archive.corrections`).

The cursor names the last row read (iid and SOP Instance UID). The index hands out iids
above its largest one when it opens, so if that row was deleted before a restart, the rows
after it may carry iids the rules have already passed. The rules then read again every
instance received since ten minutes before that row (a job already queued is not queued
twice) and go on from the newest one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from duckpacs import logs
from duckpacs.config import CALLING_AE, Route
from duckpacs.errors import ConfigError, DuckpacsError
from duckpacs.index.base import IndexBackend
from duckpacs.routing.queue import Cursor, Poll, Queue

log = logs.get("route")

CHUNK = 20_000  # rows read per pass
RESCAN_MARGIN_US = 600 * 1_000_000


def origin_of(route: Route) -> str:
    return f"route:{route.name}"


class Rules:
    """The rules of the configuration over one archive's index and queue."""

    def __init__(
        self, index: IndexBackend, queue: Queue, routes: list[Route],
        corrected: Callable[[], set[tuple[str, int]]] | None = None,
    ) -> None:  # fmt: skip
        self.index = index
        self.queue = queue
        self.routes = routes
        # (SOP Instance UID, received µs) of correction rows: not arrivals (see the module)
        self.corrected = corrected or set
        self._cursor: Cursor | None = None
        self._rescan_since: int | None = None

    @staticmethod
    def _split(route: Route) -> tuple[dict[str, Any], Any]:
        query = {k: v for k, v in route.match.items() if k != CALLING_AE}
        return query, route.match.get(CALLING_AE)

    def check(self) -> None:
        """Compile every rule once: a bad value (a date that is not YYYYMMDD, say) stops
        ``serve`` with the rule's name instead of failing each pass."""
        for route in self.routes:
            query, calling_ae = self._split(route)
            try:
                self.index.matching_arrivals(query, calling_ae, 0, 0)
            except DuckpacsError as e:
                raise ConfigError(f"route {route.name!r}: match: {e}") from None

    def start(self) -> None:
        """Place the cursor (see the module docstring) before any new arrival."""
        cursor = self.queue.cursor()
        newest = self.index.newest_instance()
        if cursor is None:  # first start: the rules apply to what arrives from now on
            cursor = Cursor(*newest) if newest else Cursor(0, "", 0)
            self.queue.record_poll(Poll([], [], [], cursor))
        elif cursor.iid and self.index.instance_at(cursor.iid) != cursor.sop_instance_uid:
            self._rescan_since = cursor.received_us - RESCAN_MARGIN_US
            cursor = Cursor(*newest) if newest else Cursor(0, "", 0)
            logs.event(
                log,
                "the last instance the rules read is gone; reading the last arrivals again",
                level=30,
            )
        self._cursor = cursor

    def poll(self) -> int:
        """Read the next arrivals, queue what the rules say; returns how many rows were read."""
        assert self._cursor is not None, "start() first"
        if self._rescan_since is not None:
            self._rescan()
        rows = self.index.arrivals(self._cursor.iid, CHUNK)
        if not rows:
            return 0
        after, upto = self._cursor.iid, rows[-1][0]
        jobs: list[tuple[str, str, str, str]] = []
        armed: list[tuple[str, str]] = []
        touched: list[tuple[str, str]] = []
        studies = sorted({r[2] for r in rows})
        versions = self.corrected()
        skipped = {r[1] for r in rows if (r[1], r[3]) in versions} if versions else set()
        for route in self.routes:
            query, calling_ae = self._split(route)
            matched = self.index.matching_arrivals(query, calling_ae, after, upto)
            matched = [m for m in matched if m[0] not in skipped]
            if route.trigger == "instance":
                jobs += [
                    (d, uid, study, origin_of(route)) for uid, study in matched for d in route.to
                ]
                continue
            hits = {study for _uid, study in matched}
            armed += [(route.name, s) for s in sorted(hits)]
            touched += [(route.name, s) for s in self.queue.watched(route.name, studies) - hits]
        last = rows[-1]
        cursor = Cursor(last[0], last[1], last[3])
        self.queue.record_poll(Poll(jobs, armed, touched, cursor))
        self._cursor = cursor
        if jobs or armed:
            logs.event(
                log,
                "arrivals routed",
                read=len(rows),
                queued=len(jobs),
                studies_watched=len(armed),
                level=10,
            )
        return len(rows)

    def _rescan(self) -> None:
        since = self._rescan_since
        assert since is not None and self._cursor is not None
        jobs: list[tuple[str, str, str, str]] = []
        armed: list[tuple[str, str]] = []
        for route in self.routes:
            query, calling_ae = self._split(route)
            matched = self.index.matching_arrivals(query, calling_ae, 0, 0, received_since_us=since)
            if route.trigger == "instance":
                jobs += [
                    (d, uid, study, origin_of(route)) for uid, study in matched for d in route.to
                ]
            else:
                armed += [(route.name, s) for s in sorted({study for _u, study in matched})]
        self.queue.record_poll(Poll(jobs, armed, [], self._cursor))
        self._rescan_since = None

    def fire_stable(self) -> int:
        """Queue the studies that have become stable; returns how many jobs were queued."""
        queued = 0
        now = time.time()
        for route in self.routes:
            if route.trigger != "stable-study":
                continue
            for study, fired_iid in self.queue.stable(route.name, now - route.stable_seconds):
                rows = self.index.study_arrivals(study, fired_iid)
                jobs = [(d, uid, study, origin_of(route)) for _iid, uid in rows for d in route.to]
                upto = rows[-1][0] if rows else fired_iid
                self.queue.fire(route.name, study, jobs, upto)
                queued += len(jobs)
                logs.event(
                    log, "stable study queued", route=route.name, study=study, instances=len(rows)
                )
        return queued

"""The forwarding queue: ``DATA/queue.sqlite``, durable across restarts and SIGKILL.

One row (a *job*) per destination and SOP Instance UID, so an instance is queued once per
destination however many rules or sends name it. A job moves through these states:

- ``waiting``: due at ``next_at`` (retries wait longer each time);
- ``sending``: claimed by the deliverer, on an association now;
- ``answered``: the destination stored it (success or warning); settled when the batch's
  association ends. A job still ``answered`` at the next start was stored before a kill and
  counts as sent, so nothing the destination acknowledged is sent again. A refused job stays
  ``sending`` until the batch settles, so a kill in between makes it wait and be retried;
- ``sent``: stored by the destination (success or warning, PS3.4 B.2.3);
- ``failed``: refused ``routing.max_attempts`` times; ``retry`` makes it ``waiting`` again;
- ``dropped``: taken out by an operator, or its instance left the archive. Kept, like
  ``sent``, for 30 days, so a rule never queues the instance for that destination again.

Destinations have a row too: consecutive association failures and when to try next, so a
destination that is down waits (exponential back-off, per destination) while the others go
on. The same file keeps the routing rules' position in the index (``cursor``) and the
studies waiting to become stable (``watch``), written in the same transaction as the jobs
they produce.

Every process opens its own connections (one per thread); WAL mode lets the deliverer, the
web page and ``duckpacs queue`` use the file at once. ``synchronous=NORMAL``: a commit
survives the process being killed; a power cut may lose the last commits, which at worst
sends an instance again.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

STATES = ("waiting", "sending", "answered", "sent", "failed", "dropped")
PENDING = ("waiting", "sending", "answered")
KEEP_DONE_SECONDS = 30 * 86400

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS jobs (
        id INTEGER PRIMARY KEY,
        destination TEXT NOT NULL,
        sop_instance_uid TEXT NOT NULL,
        study_instance_uid TEXT NOT NULL DEFAULT '',
        origin TEXT NOT NULL,
        state TEXT NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL,
        queued_at REAL NOT NULL,
        tried_at REAL,
        done_at REAL,
        error TEXT NOT NULL DEFAULT '',
        UNIQUE (destination, sop_instance_uid))""",
    "CREATE INDEX IF NOT EXISTS jobs_due ON jobs (destination, state, next_at, id)",
    "CREATE INDEX IF NOT EXISTS jobs_study ON jobs (study_instance_uid)",
    """CREATE TABLE IF NOT EXISTS destinations (
        name TEXT PRIMARY KEY, failures INTEGER NOT NULL DEFAULT 0,
        next_at REAL NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '', since REAL)""",
    """CREATE TABLE IF NOT EXISTS cursor (
        one INTEGER PRIMARY KEY CHECK (one = 1), iid INTEGER NOT NULL,
        sop_instance_uid TEXT NOT NULL, received_us INTEGER NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS watch (
        route TEXT NOT NULL, study_instance_uid TEXT NOT NULL, last REAL NOT NULL,
        fired REAL, fired_iid INTEGER NOT NULL DEFAULT 0,
        PRIMARY KEY (route, study_instance_uid))""",
)


@dataclass(frozen=True)
class Job:
    """One instance for one destination (a row of ``jobs``)."""

    id: int
    destination: str
    sop_instance_uid: str
    study_instance_uid: str
    origin: str
    state: str
    attempts: int
    next_at: float
    queued_at: float
    tried_at: float | None
    done_at: float | None
    error: str

    def as_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Cursor:
    """How far the routing rules have read the index: the last row they evaluated."""

    iid: int
    sop_instance_uid: str
    received_us: int


@dataclass(frozen=True)
class Poll:
    """What one pass of the rules produced, written in one transaction with the cursor."""

    jobs: list[tuple[str, str, str, str]]  # (destination, uid, study, origin)
    armed: list[tuple[str, str]]  # (route, study): a matching instance arrived
    touched: list[tuple[str, str]]  # (route, study): any instance arrived (re-arms a watch)
    cursor: Cursor | None


def backoff(failures: int, initial: float, maximum: float) -> float:
    """Seconds to wait after the ``failures``-th failure in a row: doubling, capped."""
    return float(min(maximum, initial * 2 ** max(0, min(failures - 1, 30))))


class Queue:
    """The queue file of one archive (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        with self._tx() as con:
            for statement in _SCHEMA:
                con.execute(statement)

    def _con(self) -> sqlite3.Connection:
        con: sqlite3.Connection | None = getattr(self._local, "con", None)
        if con is None:
            con = sqlite3.connect(
                str(self.path), isolation_level=None, timeout=30, check_same_thread=False
            )
            con.execute("PRAGMA journal_mode=WAL")
            con.execute("PRAGMA synchronous=NORMAL")
            self._local.con = con
            with self._all_lock:
                self._all.append(con)
        return con

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction, taken at once (BEGIN IMMEDIATE: no upgrade deadlocks)."""
        con = self._con()
        con.execute("BEGIN IMMEDIATE")
        try:
            yield con
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def close(self) -> None:
        with self._all_lock:
            for con in self._all:
                with contextlib.suppress(sqlite3.Error):
                    con.close()
            self._all.clear()
        self._local = threading.local()

    # --- queuing ----------------------------------------------------------------------

    def enqueue(
        self,
        items: Iterable[tuple[str, str]],
        destinations: Sequence[str],
        origin: str,
        *,
        again: bool = False,
    ) -> list[int]:
        """Queue each ``(SOP Instance UID, Study Instance UID)`` for each destination; ids
        of the jobs. A job already there is left as it is, unless ``again`` (a manual send):
        then a sent, failed or dropped one is queued anew."""
        now = time.time()
        rows = [(d, uid, study, origin, now, now) for uid, study in items for d in destinations]
        conflict = (
            "DO UPDATE SET state = 'waiting', attempts = 0, next_at = excluded.next_at, "
            "queued_at = excluded.queued_at, origin = excluded.origin, error = '', "
            "done_at = NULL WHERE state IN ('sent', 'failed', 'dropped')"
            if again
            else "DO NOTHING"
        )
        with self._tx() as con:
            con.executemany(
                "INSERT INTO jobs (destination, sop_instance_uid, study_instance_uid, origin, "
                "state, next_at, queued_at) VALUES (?, ?, ?, ?, 'waiting', ?, ?) "
                f"ON CONFLICT (destination, sop_instance_uid) {conflict}",
                rows,
            )
            if again:  # someone asked now: the destination is tried at once
                con.executemany(
                    "UPDATE destinations SET next_at = 0 WHERE name = ?",
                    [(d,) for d in destinations],
                )
        return self.ids_of([r[1] for r in rows], destinations)

    def ids_of(self, uids: Sequence[str], destinations: Sequence[str]) -> list[int]:
        found: list[int] = []
        con = self._con()
        for destination in destinations:
            for chunk in _chunks(list(dict.fromkeys(uids)), 500):
                marks = ",".join("?" * len(chunk))
                found += [
                    int(r[0])
                    for r in con.execute(
                        f"SELECT id FROM jobs WHERE destination = ? AND sop_instance_uid "
                        f"IN ({marks})",
                        [destination, *chunk],
                    )
                ]
        return found

    # --- the routing rules' state -----------------------------------------------------

    def cursor(self) -> Cursor | None:
        row = (
            self._con().execute("SELECT iid, sop_instance_uid, received_us FROM cursor").fetchone()
        )
        return Cursor(int(row[0]), str(row[1]), int(row[2])) if row else None

    def record_poll(self, poll: Poll) -> None:
        """The jobs, watches and cursor of one pass of the rules, all or nothing."""
        now = time.time()
        with self._tx() as con:
            _add_jobs(con, poll.jobs, now)
            con.executemany(
                "INSERT INTO watch (route, study_instance_uid, last) VALUES (?, ?, ?) "
                "ON CONFLICT (route, study_instance_uid) DO UPDATE SET last = excluded.last, "
                "fired = NULL",
                [(*armed, now) for armed in poll.armed],
            )
            con.executemany(
                "UPDATE watch SET last = ?, fired = NULL WHERE route = ? AND "
                "study_instance_uid = ?",
                [(now, *touched) for touched in poll.touched],
            )
            if poll.cursor is not None:
                c = poll.cursor
                con.execute(
                    "INSERT INTO cursor VALUES (1, ?, ?, ?) ON CONFLICT (one) DO UPDATE SET "
                    "iid = excluded.iid, sop_instance_uid = excluded.sop_instance_uid, "
                    "received_us = excluded.received_us",
                    [c.iid, c.sop_instance_uid, c.received_us],
                )

    def stable(self, route: str, quiet_since: float) -> list[tuple[str, int]]:
        """``(study, fired_iid)`` of the studies of ``route`` armed and quiet since then."""
        rows = self._con().execute(
            "SELECT study_instance_uid, fired_iid FROM watch WHERE route = ? AND fired IS NULL "
            "AND last <= ? ORDER BY last",
            [route, quiet_since],
        )
        return [(str(r[0]), int(r[1])) for r in rows]

    def fire(
        self, route: str, study: str, jobs: list[tuple[str, str, str, str]], upto_iid: int
    ) -> None:
        """Queue a stable study's instances and note that it fired (one transaction): later
        arrivals to the study re-arm it, and only instances past ``upto_iid`` go then."""
        now = time.time()
        with self._tx() as con:
            _add_jobs(con, jobs, now)
            con.execute(
                "UPDATE watch SET fired = ?, fired_iid = max(fired_iid, ?) WHERE route = ? AND "
                "study_instance_uid = ?",
                [now, upto_iid, route, study],
            )

    def watched(self, route: str, studies: Sequence[str]) -> set[str]:
        """Which of ``studies`` ``route`` watches (armed or fired before)."""
        found: set[str] = set()
        for chunk in _chunks(list(studies), 500):
            marks = ",".join("?" * len(chunk))
            found |= {
                str(r[0])
                for r in self._con().execute(
                    f"SELECT study_instance_uid FROM watch WHERE route = ? AND "
                    f"study_instance_uid IN ({marks})",
                    [route, *chunk],
                )
            }
        return found

    # --- delivering -------------------------------------------------------------------

    def recover(self) -> tuple[int, int]:
        """After a stop or a kill: jobs answered count as sent, jobs claimed wait again.
        Returns (answered, reclaimed)."""
        now = time.time()
        with self._tx() as con:
            answered = con.execute(
                "UPDATE jobs SET state = 'sent', done_at = ? WHERE state = 'answered'", [now]
            ).rowcount
            reclaimed = con.execute(
                "UPDATE jobs SET state = 'waiting' WHERE state = 'sending'"
            ).rowcount
        return answered, reclaimed

    def destinations_with_work(self) -> list[str]:
        rows = self._con().execute(
            "SELECT DISTINCT destination FROM jobs WHERE state = 'waiting' ORDER BY 1"
        )
        return [str(r[0]) for r in rows]

    def next_try(self, destination: str) -> float:
        """When the destination may be tried (0: now): its back-off and its earliest job."""
        con = self._con()
        row = con.execute(
            "SELECT next_at FROM destinations WHERE name = ?", [destination]
        ).fetchone()
        job = con.execute(
            "SELECT min(next_at) FROM jobs WHERE destination = ? AND state = 'waiting'",
            [destination],
        ).fetchone()
        if job is None or job[0] is None:
            return float("inf")
        return max(float(row[0]) if row else 0.0, float(job[0]))

    def claim(self, destination: str, limit: int, only: Sequence[int] | None = None) -> list[Job]:
        """Take up to ``limit`` due jobs of ``destination`` (oldest first) for sending."""
        now = time.time()
        extra, params = "", []
        if only is not None:
            extra = f" AND id IN ({','.join('?' * len(only))})"
            params = list(only)
        with self._tx() as con:
            rows = con.execute(
                "UPDATE jobs SET state = 'sending' WHERE id IN (SELECT id FROM jobs "
                "WHERE destination = ? AND state = 'waiting' AND next_at <= ?"
                f"{extra} ORDER BY id LIMIT ?) RETURNING *",
                [destination, now, *params, limit],
            ).fetchall()
        return sorted((_job(r) for r in rows), key=lambda j: j.id)

    def answered(self, job_id: int) -> None:
        """The destination answered this job's C-STORE (see the module docstring)."""
        con = self._con()
        con.execute("UPDATE jobs SET state = 'answered' WHERE id = ?", [job_id])

    def settle(
        self,
        destination: str,
        sent: Sequence[int],
        refused: Sequence[tuple[int, str]],
        untried: Sequence[int],
        *,
        reason: str,
        max_attempts: int,
        initial: float,
        maximum: float,
    ) -> None:
        """The outcome of one association: ``sent`` are done; each ``refused`` job counts an
        attempt and waits longer (failed after ``max_attempts``); ``untried`` ones wait with
        the destination, which backs off when ``reason`` says why they were not tried."""
        now = time.time()
        with self._tx() as con:
            con.executemany(
                "UPDATE jobs SET state = 'sent', done_at = ?, tried_at = ?, error = '' "
                "WHERE id = ?",
                [(now, now, i) for i in sent],
            )
            for job_id, why in refused:
                row = con.execute("SELECT attempts FROM jobs WHERE id = ?", [job_id]).fetchone()
                attempts = (int(row[0]) if row else 0) + 1
                state = "failed" if attempts >= max_attempts else "waiting"
                con.execute(
                    "UPDATE jobs SET state = ?, attempts = ?, next_at = ?, tried_at = ?, "
                    "error = ? WHERE id = ?",
                    [state, attempts, now + backoff(attempts, initial, maximum), now, why, job_id],
                )
            con.executemany(
                "UPDATE jobs SET state = 'waiting', tried_at = ?, error = ? WHERE id = ?",
                [(now, reason, i) for i in untried],
            )
            if reason:
                _destination_failed(con, destination, reason, now, initial, maximum)
            else:
                con.execute(
                    "INSERT INTO destinations (name, failures, next_at, error, since) "
                    "VALUES (?, 0, 0, '', NULL) ON CONFLICT (name) DO UPDATE SET failures = 0, "
                    "next_at = 0, error = '', since = NULL",
                    [destination],
                )

    def gone(self, job_ids: Sequence[int], why: str) -> None:
        """Jobs whose instance is no longer in the archive (removed meanwhile)."""
        now = time.time()
        with self._tx() as con:
            con.executemany(
                "UPDATE jobs SET state = 'dropped', done_at = ?, error = ? WHERE id = ?",
                [(now, why, i) for i in job_ids],
            )

    def unreachable(
        self,
        destination: str,
        job_ids: Sequence[int],
        reason: str,
        *,
        initial: float,
        maximum: float,
    ) -> float:
        """No association with the destination: its jobs wait and it backs off; returns
        when it is tried next."""
        self.settle(
            destination,
            [],
            [],
            job_ids,
            reason=reason,
            max_attempts=1,
            initial=initial,
            maximum=maximum,
        )
        row = (
            self._con()
            .execute("SELECT next_at FROM destinations WHERE name = ?", [destination])
            .fetchone()
        )
        return float(row[0]) if row else 0.0

    # --- what operators see and do ------------------------------------------------------

    def jobs(
        self,
        *,
        states: Sequence[str] = (),
        destination: str | None = None,
        study: str | None = None,
        ids: Sequence[int] = (),
        limit: int = 1000,
    ) -> list[Job]:
        where, params = _selection(states, destination, study, ids)
        rows = self._con().execute(
            f"SELECT * FROM jobs WHERE {where} ORDER BY id LIMIT ?", [*params, int(limit)]
        )
        return [_job(r) for r in rows]

    def summary(self) -> list[dict[str, Any]]:
        """Per destination: jobs per state, when it is tried next, the last error."""
        con = self._con()
        per: dict[str, dict[str, Any]] = {}
        for name, state, count in con.execute(
            "SELECT destination, state, count(*) FROM jobs GROUP BY 1, 2"
        ):
            entry = per.setdefault(str(name), _empty_summary(str(name)))
            entry[str(state)] = int(count)
        for name, failures, next_at, error, since in con.execute(
            "SELECT name, failures, next_at, error, since FROM destinations"
        ):
            entry = per.setdefault(str(name), _empty_summary(str(name)))
            entry.update(
                failures=int(failures),
                next_try=float(next_at) or None,
                error=str(error),
                failing_since=since,
            )
        # SQLite takes the bare column `error` from the row holding max(id): the latest.
        for name, error, _last in con.execute(
            "SELECT destination, error, max(id) FROM jobs WHERE state IN ('waiting', 'failed') "
            "AND error <> '' GROUP BY destination"
        ):
            entry = per[str(name)]
            entry["error"] = entry["error"] or str(error)
        return [per[name] for name in sorted(per)]

    def retry(
        self, *, destination: str | None = None, study: str | None = None, ids: Sequence[int] = ()
    ) -> int:
        """Failed and waiting jobs of the selection become due now, their attempts reset;
        their destinations are tried at once."""
        where, params = _selection(("failed", "waiting"), destination, study, ids)
        with self._tx() as con:
            targets = [
                str(r[0])
                for r in con.execute(f"SELECT DISTINCT destination FROM jobs WHERE {where}", params)
            ]
            count = con.execute(
                f"UPDATE jobs SET state = 'waiting', attempts = 0, next_at = 0 WHERE {where}",
                params,
            ).rowcount
            con.executemany(
                "UPDATE destinations SET next_at = 0 WHERE name = ?", [(t,) for t in targets]
            )
        return int(count)

    def drop(
        self, *, destination: str | None = None, study: str | None = None, ids: Sequence[int] = ()
    ) -> int:
        """Failed and waiting jobs of the selection leave the queue (kept as dropped)."""
        where, params = _selection(("failed", "waiting"), destination, study, ids)
        with self._tx() as con:
            count = con.execute(
                f"UPDATE jobs SET state = 'dropped', done_at = ?, error = 'dropped' WHERE {where}",
                [time.time(), *params],
            ).rowcount
        return int(count)

    def pending_studies(self) -> set[str]:
        """Studies with instances still to be forwarded (the storage policy spares them)."""
        rows = self._con().execute(
            "SELECT DISTINCT study_instance_uid FROM jobs WHERE state IN "
            "('waiting', 'sending', 'answered')"
        )
        return {str(r[0]) for r in rows}

    def prune(self) -> int:
        """Forget sent and dropped jobs older than :data:`KEEP_DONE_SECONDS`."""
        with self._tx() as con:
            return int(
                con.execute(
                    "DELETE FROM jobs WHERE state IN ('sent', 'dropped') AND done_at < ?",
                    [time.time() - KEEP_DONE_SECONDS],
                ).rowcount
            )


def _add_jobs(
    con: sqlite3.Connection, jobs: Sequence[tuple[str, str, str, str]], now: float
) -> None:
    """New ``(destination, uid, study, origin)`` jobs, due now; one already there stays."""
    con.executemany(
        "INSERT INTO jobs (destination, sop_instance_uid, study_instance_uid, origin, "
        "state, next_at, queued_at) VALUES (?, ?, ?, ?, 'waiting', ?, ?) "
        "ON CONFLICT (destination, sop_instance_uid) DO NOTHING",
        [(*job, now, now) for job in jobs],
    )


def _destination_failed(
    con: sqlite3.Connection, name: str, reason: str, now: float, initial: float, maximum: float
) -> None:
    row = con.execute("SELECT failures FROM destinations WHERE name = ?", [name]).fetchone()
    failures = (int(row[0]) if row else 0) + 1
    con.execute(
        "INSERT INTO destinations (name, failures, next_at, error, since) VALUES (?, ?, ?, ?, ?) "
        "ON CONFLICT (name) DO UPDATE SET failures = excluded.failures, "
        "next_at = excluded.next_at, error = excluded.error, "
        "since = coalesce(destinations.since, excluded.since)",
        [name, failures, now + backoff(failures, initial, maximum), reason, now],
    )


def _selection(
    states: Sequence[str], destination: str | None, study: str | None, ids: Sequence[int]
) -> tuple[str, list[Any]]:
    parts: list[str] = ["TRUE"]
    params: list[Any] = []
    if states:
        parts.append(f"state IN ({','.join('?' * len(states))})")
        params += list(states)
    if destination:
        parts.append("destination = ?")
        params.append(destination)
    if study:
        parts.append("study_instance_uid = ?")
        params.append(study)
    if ids:
        parts.append(f"id IN ({','.join('?' * len(ids))})")
        params += [int(i) for i in ids]
    return " AND ".join(parts), params


def _empty_summary(name: str) -> dict[str, Any]:
    return {
        "destination": name,
        **dict.fromkeys(STATES, 0),
        "failures": 0,
        "next_try": None,
        "error": "",
        "failing_since": None,
    }


def _job(row: Sequence[Any]) -> Job:
    return Job(
        int(row[0]),
        str(row[1]),
        str(row[2]),
        str(row[3]),
        str(row[4]),
        str(row[5]),
        int(row[6]),
        float(row[7]),
        float(row[8]),
        row[9],
        row[10],
        str(row[11]),
    )


def _chunks(items: list[str], size: int) -> Iterator[list[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class DelivererLock:
    """Who delivers the queue of an archive: one process at a time (``duckpacs serve``, or
    ``duckpacs send`` when no server runs). An advisory lock on ``DATA/queue.lock``; the
    kernel releases it when its holder dies, so a killed server never blocks the next."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._file: IO[bytes] | None = None

    def acquire(self) -> bool:
        """Take the lock if free; True when this process holds it now."""
        if self._file is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "ab")  # noqa: SIM115 (held for as long as we deliver)
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        os.set_inheritable(handle.fileno(), False)
        self._file = handle
        return True

    @property
    def held(self) -> bool:
        return self._file is not None

    def release(self) -> None:
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

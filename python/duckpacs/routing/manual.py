"""Manual forwarding (``duckpacs send``): the instances of a query queued for a peer, then
delivered by whoever holds the deliverer's lock.

While ``duckpacs serve`` runs it holds the lock and delivers; the command waits until each
of its jobs is sent, failed, or has been tried once (a destination that is down is retried
by the server, with back-off, after the command has returned). With no server running (or
once it has stopped), the command delivers its jobs itself, one attempt each; what is left
waits for the next ``serve``. Either way the jobs are the queue's: ``duckpacs queue`` shows them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from duckpacs.config import Settings
from duckpacs.routing.delivery import Deliverer, Locate, Retry
from duckpacs.routing.queue import DelivererLock, Job, Queue

WAIT_POLL = 0.1
LOOKUP_CHUNK = 1000


def instances_of(archive: Any, level: str, query: dict[str, Any]) -> list[tuple[str, str]]:
    """``(SOP Instance UID, Study Instance UID)`` of the instances under every match."""
    uids = [r.sop_instance_uid for r in archive.locate(level, query)]
    studies: dict[str, str] = {}
    for start in range(0, len(uids), LOOKUP_CHUNK):
        chunk = uids[start : start + LOOKUP_CHUNK]
        for row in archive.find("image", {"SOPInstanceUID": chunk}, ["StudyInstanceUID"]):
            studies[str(row["SOPInstanceUID"])] = str(row.get("StudyInstanceUID") or "")
    return [(uid, studies.get(uid, "")) for uid in uids]


def locator(archive: Any) -> Locate:
    """A deliverer's ``locate`` over a reading archive (the server's or a read-only index)."""

    def locate(uids: Sequence[str]) -> dict[str, tuple[str, str, str, int, int, int]]:
        refs = archive.locate("image", {"SOPInstanceUID": list(uids)})
        return {r.sop_instance_uid: (r.sop_instance_uid, r.sop_class_uid, r.transfer_syntax,
                                     *r.location) for r in refs}  # fmt: skip

    return locate


@dataclass
class Outcome:
    """Where the jobs of one send stand when the command returns."""

    jobs: list[Job] = field(default_factory=list)
    delivered_here: bool = False

    def count(self, *states: str) -> int:
        return sum(1 for j in self.jobs if j.state in states)

    def reasons(self) -> list[tuple[str, str]]:
        return [(j.sop_instance_uid, j.error) for j in self.jobs if j.state != "sent" and j.error]


def deliver_here(
    settings: Settings,
    queue: Queue,
    destination: str,
    ids: list[int],
    *,
    store: Any,
    locate: Locate,
    progress: Callable[[int, int], None],
) -> None:
    """Deliver the jobs ``ids`` in this process (the caller holds the deliverer's lock): as
    many batches as it takes, stopping when the destination cannot be reached."""
    queue.recover()  # jobs a killed deliverer left claimed or answered
    deliverer = Deliverer(destination, settings=settings, queue=queue, locate=locate,
                          store=store, retry=Retry.of(settings))  # fmt: skip
    queue.retry(ids=ids)  # due now, whatever back-off the destination was in
    done = 0
    while True:
        step = deliverer.step(only=ids)
        done += step.sent + step.failed
        progress(done, len(ids))
        if step.outcome != "sent":
            return


def _settled(job: Job, since: float) -> bool:
    if job.state in ("sent", "failed", "dropped"):
        return True
    return job.state == "waiting" and (job.tried_at or 0) >= since


def send(
    settings: Settings,
    queue: Queue,
    lock: DelivererLock,
    destination: str,
    items: list[tuple[str, str]],
    *,
    store: Any,
    locate: Locate,
    wait: bool,
    progress: Callable[[int, int], None],
) -> Outcome:
    """Queue ``items`` for ``destination`` and see them delivered (module docstring)."""
    since = time.time()
    ids = queue.enqueue(items, [destination], "send:cli", again=True)
    outcome = Outcome()
    while True:
        if lock.acquire():  # no server (or it has stopped meanwhile): deliver here
            try:
                deliver_here(settings, queue, destination, ids, store=store, locate=locate,
                             progress=progress)  # fmt: skip
            finally:
                lock.release()
            outcome.delivered_here = True
            break
        jobs = queue.jobs(ids=ids, limit=len(ids))
        settled = sum(1 for j in jobs if _settled(j, since))
        progress(settled, len(ids))
        if not wait or settled == len(jobs):
            break
        time.sleep(WAIT_POLL)
    outcome.jobs = queue.jobs(ids=ids, limit=max(1, len(ids)))
    return outcome

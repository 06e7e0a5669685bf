"""Delivering the queue: queued instances C-STOREd to their destination, a batch per
association, by the Rust C-STORE SCU (``duckpacs._core.send_stored``).

Each instance goes out as stored when the destination accepts its transfer syntax, else
transcoded to an uncompressed syntax it accepted (:mod:`duckpacs.dicom.transcode`): the
destination always gets a syntax it negotiated (PS3.8 9.3). As each C-STORE is answered its
job is marked ``answered`` before the next one is sent, so a kill at any moment leaves at
most the instance on the wire (one per association) to be sent again (see
:mod:`duckpacs.routing.queue`).

Outcomes: an answer of success or warning marks the job sent. A refusal (a failure status,
or a syntax the destination will not take) counts an attempt against the job alone, which
waits longer each time. A destination that cannot be reached, or drops the association,
backs off as a whole (exponential, ``routing.retry_initial`` to ``routing.retry_max``) and
its jobs wait for it; other destinations have their own deliverers and are not held up.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from duckpacs import _core, logs
from duckpacs.config import Settings
from duckpacs.dicom import transcode
from duckpacs.errors import DuckpacsError, NetworkError
from duckpacs.net.tls import dial_args
from duckpacs.routing.queue import Job, Queue

log = logs.get("route")

BATCH = 256  # instances per association
TIMEOUT = 30.0
# How send_stored words a failure that is the instance's, not the association's.
_REFUSALS = (
    "the peer answered",
    "the peer accepted",
    "cannot transcode",
    "cannot read it",
    "stored stream",
)

Locate = Callable[[Sequence[str]], dict[str, tuple[str, str, str, int, int, int]]]


@dataclass(frozen=True)
class Retry:
    """The retry settings (``[routing]``)."""

    initial: float
    maximum: float
    max_attempts: int

    @classmethod
    def of(cls, settings: Settings) -> Retry:
        return cls(
            float(settings["routing.retry_initial"]),
            float(settings["routing.retry_max"]),
            int(settings["routing.max_attempts"]),
        )


@dataclass(frozen=True)
class Step:
    """What one delivery step did."""

    outcome: str  # idle (nothing due), sent (a batch went), down (destination unreachable)
    sent: int = 0
    failed: int = 0
    reason: str = ""


class Deliverer:
    """Sends the queued jobs of one destination (one association at a time)."""

    def __init__(
        self,
        destination: str,
        *,
        settings: Settings,
        queue: Queue,
        locate: Locate,
        store: Any,
        retry: Retry,
    ) -> None:
        self.destination = destination
        self.settings = settings
        self.queue = queue
        self.locate = locate
        self.store = store
        self.retry = retry

    def step(self, only: Sequence[int] | None = None) -> Step:
        """Send one batch of due jobs (of ``only``, when given)."""
        jobs = self.queue.claim(self.destination, BATCH, only)
        if not jobs:
            return Step("idle")
        try:
            peer = self.settings.peer(self.destination)
        except DuckpacsError as e:
            return self._unreachable(jobs, str(e))
        found = self.locate([j.sop_instance_uid for j in jobs])
        gone = [j.id for j in jobs if j.sop_instance_uid not in found]
        if gone:
            self.queue.gone(gone, "no longer in the archive")
        jobs = [j for j in jobs if j.sop_instance_uid in found]
        if not jobs:
            return Step("sent")

        def progress(done: int, _total: int, failure: str | None) -> None:
            # A refusal stays ``sending``: after a kill it waits again and is retried.
            if failure is None:
                self.queue.answered(jobs[done - 1].id)

        try:
            result = _core.send_stored(
                self.store,
                peer.host,
                peer.port,
                self.settings.ae_title,
                peer.ae_title,
                [found[j.sop_instance_uid] for j in jobs],
                transcode.dataset_in,
                timeout=TIMEOUT,
                progress=progress,
                tls=dial_args(self.settings, peer),
            )
        except NetworkError as e:
            return self._unreachable(jobs, str(e))
        return self._settle(jobs, dict(result["failures"]))

    def _settle(self, jobs: list[Job], failures: dict[str, str]) -> Step:
        sent, refused, untried = [], [], []
        reason = ""
        for job in jobs:
            why = failures.get(job.sop_instance_uid)
            if why is None:
                sent.append(job.id)
            elif why.startswith(_REFUSALS):
                refused.append((job.id, why))
            else:  # the association broke: not the instance's fault
                untried.append(job.id)
                reason = reason or f"association lost: {why}"
        r = self.retry
        self.queue.settle(
            self.destination,
            sent,
            refused,
            untried,
            reason=reason,
            max_attempts=r.max_attempts,
            initial=r.initial,
            maximum=r.maximum,
        )
        logs.event(
            log,
            "forwarded",
            to=self.destination,
            sent=len(sent),
            refused=len(refused),
            waiting=len(untried),
            level=20 if not (refused or untried) else 30,
        )
        for job_id, why in refused[:5]:
            logs.event(
                log, "refused by destination", to=self.destination, job=job_id, reason=why, level=30
            )
        return Step("down" if reason else "sent", len(sent), len(refused), reason)

    def _unreachable(self, jobs: list[Job], reason: str) -> Step:
        r = self.retry
        next_try = self.queue.unreachable(
            self.destination, [j.id for j in jobs], reason, initial=r.initial, maximum=r.maximum
        )
        logs.event(
            log,
            "destination unreachable; will retry",
            to=self.destination,
            reason=reason,
            retry_in=f"{max(0.0, next_try - time.time()):.0f}s",
            level=30,
        )
        return Step("down", reason=reason)

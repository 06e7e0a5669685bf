"""Routing in ``serve``: the rules' thread, and a deliverer thread per destination.

Started after the archive is open and before the listeners (so the rules' cursor is placed
before any new arrival), stopped before the archive closes. The rules read the index every
half second (:mod:`duckpacs.routing.rules`); each destination with jobs gets a thread of its
own that sends them (:mod:`duckpacs.routing.delivery`), so one destination that is down
waits on its own back-off while the others go on. Only the process holding the deliverer's
lock sends (:class:`~duckpacs.routing.queue.DelivererLock`): if ``duckpacs send`` is
delivering when the server starts, the server takes over when it is done.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from typing import Any

from duckpacs import logs
from duckpacs.archive import layout
from duckpacs.archive.corrections import Corrections
from duckpacs.archive.facade import Archive
from duckpacs.archive.types import InstanceRef
from duckpacs.config import Settings
from duckpacs.routing.delivery import Deliverer, Locate, Retry
from duckpacs.routing.queue import DelivererLock, Queue
from duckpacs.routing.rules import CHUNK, Rules

log = logs.get("route")

POLL_INTERVAL = 0.5
PRUNE_INTERVAL = 3600.0


def open_queue(settings: Settings) -> Queue:
    return Queue(settings.data_dir / layout.QUEUE_DB)


def deliverer_lock(settings: Settings) -> DelivererLock:
    return DelivererLock(settings.data_dir / layout.QUEUE_LOCK)


def index_locator(archive: Archive) -> Locate:
    """A deliverer's ``locate`` over the server's own index."""

    def locate(uids: Sequence[str]) -> dict[str, tuple[str, str, str, int, int, int]]:
        refs = [InstanceRef.from_row(row) for row in archive.index.instance_refs(uids)]
        return {r.sop_instance_uid: (r.sop_instance_uid, r.sop_class_uid, r.transfer_syntax,
                                     *r.location) for r in refs}  # fmt: skip

    return locate


class Router:
    """The forwarding of one server (see the module docstring)."""

    def __init__(self, settings: Settings, archive: Archive) -> None:
        self.settings = settings
        self.archive = archive
        self.queue = open_queue(settings)
        self.rules = Rules(archive.index, self.queue, settings.routes,
                           Corrections(settings.data_dir).version_arrivals)  # fmt: skip
        self.lock = deliverer_lock(settings)
        self.retry = Retry.of(settings)
        self._stopping = threading.Event()
        self._wakes: dict[str, threading.Event] = {}
        self._threads: list[threading.Thread] = []
        self._guard = threading.Lock()

    def start(self) -> None:
        self.rules.check()
        self.rules.start()
        for target, name in ((self._rules_loop, "route-rules"), (self._dispatch, "route-send")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if self.settings.routes:
            logs.event(log, "routing", routes=len(self.settings.routes))

    def wake(self, destinations: Sequence[str] = ()) -> None:
        """New jobs: their deliverers look at once instead of at their next poll (a
        destination without one gets it now rather than at the next dispatch)."""
        if self.lock.held:
            for name in destinations:
                self._ensure(name)
        with self._guard:
            for name, event in self._wakes.items():
                if not destinations or name in destinations:
                    event.set()

    def stop(self) -> None:
        with self._guard:
            self._stopping.set()
        self.wake()
        for thread in list(self._threads):
            thread.join(timeout=60)
        self.lock.release()
        self.queue.close()

    def status(self) -> dict[str, Any]:
        return {"destinations": self.queue.summary(), "delivering": self.lock.held}

    # --- threads ----------------------------------------------------------------------

    def _rules_loop(self) -> None:
        while not self._stopping.is_set():
            read = 0
            try:
                read = self.rules.poll()
                if self.rules.fire_stable() or read:
                    self.wake()
            except Exception as e:  # noqa: BLE001 (logged; the next pass tries again)
                logs.event(log, "routing rules failed; retrying", reason=e, level=40)
            if read < CHUNK:
                self._stopping.wait(POLL_INTERVAL)

    def _dispatch(self) -> None:
        """Take the deliverer's lock, recover what a kill left, start a thread per
        destination with jobs; forget old finished jobs now and then."""
        waiting_logged = recovered = False
        pruned = 0.0
        while not self._stopping.is_set():
            if not self.lock.acquire():
                if not waiting_logged:
                    logs.event(log, "another process delivers the queue; waiting for it")
                    waiting_logged = True
                self._stopping.wait(1.0)
                continue
            try:
                if not recovered:
                    answered, reclaimed = self.queue.recover()
                    recovered = True
                    if answered or reclaimed:
                        logs.event(log, "queue recovered", answered_as_sent=answered,
                                   sending_again=reclaimed)  # fmt: skip
                if time.monotonic() - pruned > PRUNE_INTERVAL:
                    self.queue.prune()
                    pruned = time.monotonic()
                for destination in self.queue.destinations_with_work():
                    self._ensure(destination)
            except Exception as e:  # noqa: BLE001 (logged; retried)
                logs.event(log, "queue check failed; retrying", reason=e, level=40)
            self._stopping.wait(1.0)

    def _ensure(self, destination: str) -> None:
        """Deliverer threads for ``destination`` (``routing.associations`` of them: their
        claims never overlap, so each association carries its own batches)."""
        with self._guard:
            if destination in self._wakes or self._stopping.is_set():
                return
            self._wakes[destination] = threading.Event()
            for n in range(self.settings["routing.associations"]):
                thread = threading.Thread(
                    target=self._deliver, args=(destination,), name=f"send-{destination}-{n}",
                    daemon=True,
                )  # fmt: skip
                thread.start()
                self._threads.append(thread)

    def _deliver(self, destination: str) -> None:
        wake = self._wakes[destination]
        deliverer = Deliverer(
            destination,
            settings=self.settings,
            queue=self.queue,
            locate=index_locator(self.archive),
            store=self.archive.store_backend,
            retry=self.retry,
        )
        while not self._stopping.is_set():
            try:
                wait = self.queue.next_try(destination) - time.time()
                if wait <= 0:
                    if deliverer.step().outcome != "idle":
                        continue
                    wait = 1.0
            except Exception as e:  # noqa: BLE001 (logged; retried)
                logs.event(log, "delivery failed; retrying", to=destination, reason=e, level=40)
                wait = 5.0
            wake.wait(min(max(wait, 0.05), 1.0))
            wake.clear()

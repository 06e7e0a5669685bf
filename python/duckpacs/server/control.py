"""What the web's admin page may ask of the running server: the forwarding queue, sending
a study through it ("send to..."), and where storage stands (with the last backup's age).
The same operations as ``duckpacs queue`` and ``duckpacs send``, on the same queue."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from duckpacs.archive.facade import Archive
from duckpacs.backup import status as backup_status
from duckpacs.config import Settings
from duckpacs.errors import QueryError
from duckpacs.policy.service import PolicyService
from duckpacs.routing.engine import Router
from duckpacs.routing.queue import STATES


class Control:
    """The server's routing and storage policy, for the web layer."""

    def __init__(
        self, settings: Settings, archive: Archive, router: Router, policy: PolicyService
    ) -> None:
        self.settings = settings
        self.archive = archive
        self.router = router
        self.policy = policy

    def peers(self) -> list[dict[str, Any]]:
        return [
            {"name": p.name, "ae_title": p.ae_title, "host": p.host, "port": p.port}
            for p in self.settings.peers.values()
        ]

    def overview(
        self, *, state: str = "", destination: str = "", limit: int = 200
    ) -> dict[str, Any]:
        if state and state not in STATES:
            raise QueryError(f"unknown state {state!r}; one of {', '.join(STATES)}")
        states = (state,) if state else ("waiting", "sending", "answered", "failed")
        jobs = self.router.queue.jobs(
            states=states, destination=destination or None, limit=max(1, min(limit, 5000))
        )
        return {
            "destinations": self.router.queue.summary(),
            "jobs": [j.as_json() for j in jobs],
            "storage": {**self.policy.status(), **self.usage()},
            "peers": self.peers(),
        }

    def usage(self) -> dict[str, Any]:
        """What the archive holds and what its trash keeps (the admin page's disk usage)."""
        self.archive.flush()
        counts = self.archive.index.stats()
        batches = self.archive.trash_list()
        return {
            "instances": counts["instances"], "studies": counts["studies"],
            "trash_batches": len(batches),
            "trash_instances": sum(b["instances"] for b in batches),
            "trash_bytes": sum(b["bytes"] for b in batches),
            "trash_days": self.settings["archive.trash_days"],
            **backup_status.age(self.settings.data_dir, self.settings["backup.warn_days"]),
        }  # fmt: skip

    def retry(self, *, ids: Sequence[int] = (), destination: str = "", study: str = "") -> int:
        count = self.router.queue.retry(
            ids=ids, destination=destination or None, study=study or None
        )
        self.router.wake()
        return count

    def drop(self, *, ids: Sequence[int] = (), destination: str = "", study: str = "") -> int:
        return self.router.queue.drop(ids=ids, destination=destination or None, study=study or None)

    def send_study(self, study: str, to: str, origin: str) -> int:
        """Queue every instance of ``study`` for the peer ``to``; returns how many."""
        peer = self.settings.peer(to)
        refs = self.archive.locate("study", {"StudyInstanceUID": study})
        if not refs:
            raise QueryError(f"no such study: {study}")
        items = [(r.sop_instance_uid, study) for r in refs]
        ids = self.router.queue.enqueue(items, [peer.name], origin, again=True)
        self.router.wake([peer.name])
        return len(ids)

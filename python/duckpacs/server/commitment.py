"""Storage Commitment Push Model as SCP (PS3.4 Annex J).

The SCU asks, with N-ACTION (action type 1, "Request Storage Commitment"), whether a list of
instances is safely stored. We answer the N-ACTION at once, then check each instance in the
index (stores are acknowledged only once durable, so indexed means committed) and send the
result as an N-EVENT-REPORT: event type 1 when all are committed, 2 when some failed, with
Failure Reason 0x0112 "No such object instance" or 0x0119 "Class / Instance conflict"
(PS3.4 J.3.3.1). The report goes on the same association while it is open, else on a new
association to the requester's configured address, where we propose the SCP role (J.3.3).
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_role
from pynetdicom.sop_class import StorageCommitmentPushModel  # type: ignore[attr-defined]

from duckpacs import logs
from duckpacs.config import Peer
from duckpacs.errors import DuckpacsError

if TYPE_CHECKING:
    from duckpacs.server.dimse import DimseServer

log = logs.get("dimse")

# The well-known SOP Instance of the Storage Commitment Push Model (PS3.4 J.3.5).
COMMITMENT_INSTANCE_UID = "1.2.840.10008.1.20.1.1"
NO_SUCH_INSTANCE = 0x0112
CLASS_INSTANCE_CONFLICT = 0x0119
STATUS_NO_SUCH_ACTION = 0x0123
STATUS_INVALID_ARGUMENT = 0x0115
# How long we wait for the N-ACTION response to go out before reporting on that association.
_HANDOFF_TIMEOUT = 5.0
_RELEASE_GRACE = 0.2
_SAME_ASSOC_TIMEOUT = 5.0


class Committer:
    """Answers N-ACTION requests and sends the N-EVENT-REPORTs in background threads."""

    def __init__(self, server: DimseServer) -> None:
        self.server = server
        self._threads: list[threading.Thread] = []

    def stop(self) -> None:
        for thread in self._threads:
            thread.join(timeout=2)
        self._threads.clear()

    def on_action(self, event: Any) -> tuple[int, Dataset | None]:
        if not self.server.allowed(event, "store", "N-ACTION"):
            return 0x0124, None
        if event.action_type != 1:
            return STATUS_NO_SUCH_ACTION, None
        info = event.action_information
        transaction = str(info.get("TransactionUID", "") or "")
        items = info.get("ReferencedSOPSequence", None)
        if not transaction or items is None:
            return STATUS_INVALID_ARGUMENT, None
        wanted = [
            (str(i.get("ReferencedSOPClassUID", "")), str(i.get("ReferencedSOPInstanceUID", "")))
            for i in items
        ]
        requester = event.assoc.requestor.ae_title
        logs.event(log, "N-ACTION storage commitment", transaction=transaction, count=len(wanted))
        thread = threading.Thread(
            target=self._report,
            args=(event.assoc, requester, transaction, wanted),
            name="commitment",
            daemon=True,
        )
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return 0x0000, None

    def result(self, transaction: str, wanted: list[tuple[str, str]]) -> tuple[int, Dataset]:
        """The event type (1 or 2) and Event Information for one commitment request."""
        done, failed = [], []
        for sop_class, uid in wanted:
            try:
                ref = self.server.archive.lookup(uid)
            except DuckpacsError:
                ref = None
            item = Dataset()
            item.ReferencedSOPClassUID = sop_class
            item.ReferencedSOPInstanceUID = uid
            if ref is None:
                item.FailureReason = NO_SUCH_INSTANCE
                failed.append(item)
            elif ref.sop_class_uid and ref.sop_class_uid != sop_class:
                item.FailureReason = CLASS_INSTANCE_CONFLICT
                failed.append(item)
            else:
                done.append(item)
        ds = Dataset()
        ds.TransactionUID = transaction
        if done:
            ds.ReferencedSOPSequence = done
        if failed:
            ds.FailedSOPSequence = failed
        return (2 if failed else 1), ds

    def _report(
        self, assoc: Any, requester: str, transaction: str, wanted: list[tuple[str, str]]
    ) -> None:
        event_type, info = self.result(transaction, wanted)
        deadline = time.monotonic() + _HANDOFF_TIMEOUT
        while assoc.is_established and assoc._is_paused and time.monotonic() < deadline:
            time.sleep(0.002)  # our N-ACTION response is still on its way out
        # A requester that releases at once (most modalities) gets the report on a new
        # association; give it a moment to do so rather than racing its A-RELEASE-RQ.
        time.sleep(_RELEASE_GRACE)
        if assoc.is_established and not assoc.acse.is_release_requested():
            assoc.dimse_timeout = min(
                assoc.dimse_timeout or _SAME_ASSOC_TIMEOUT, _SAME_ASSOC_TIMEOUT
            )
            if self._send(assoc, event_type, info):
                logs.event(
                    log, "N-EVENT-REPORT sent", transaction=transaction, on="same association"
                )
                return
        peer = self.server.settings.peer_by_ae_title(requester)
        if peer is None:
            logs.event(
                log,
                "N-EVENT-REPORT undeliverable",
                transaction=transaction,
                reason=f"{requester} released and is not a configured peer",
            )
            return
        self._send_new_association(peer, event_type, info, transaction)

    @staticmethod
    def _send(assoc: Any, event_type: int, info: Dataset) -> bool:
        try:
            status, _reply = assoc.send_n_event_report(
                info, event_type, StorageCommitmentPushModel, COMMITMENT_INSTANCE_UID
            )
        except (RuntimeError, ValueError):
            return False
        return bool(status) and int(status.get("Status", 0xFFFF)) == 0

    def _send_new_association(
        self, peer: Peer, event_type: int, info: Dataset, transaction: str
    ) -> None:
        ae = AE(ae_title=self.server.settings.ae_title)
        ae.add_requested_context(StorageCommitmentPushModel)
        role = build_role(StorageCommitmentPushModel, scp_role=True)
        assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, ext_neg=[role])
        if not assoc.is_established:
            logs.event(
                log,
                "N-EVENT-REPORT undeliverable",
                transaction=transaction,
                reason=f"cannot associate with {peer.ae_title} at {peer.host}:{peer.port}",
            )
            return
        try:
            ok = self._send(assoc, event_type, info)
        finally:
            assoc.release()
        logs.event(
            log,
            "N-EVENT-REPORT " + ("sent" if ok else "refused"),
            transaction=transaction,
            on="new association",
        )

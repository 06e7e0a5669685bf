"""The DIMSE listener (PS3.7, PS3.8), built on pynetdicom.

Services so far: Verification (C-ECHO, PS3.4 Annex A). Association requests are checked
against the access policy: a wrong called AE title is rejected with reason 7 ("called AE
title not recognised", PS3.8 9.3.4) and a caller with no permission at all with reason 3
("calling AE title not recognised").
"""

from __future__ import annotations

from typing import Any

from pynetdicom import AE, evt
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from duckpacs import logs
from duckpacs.config import Settings
from duckpacs.server.access import AccessPolicy

log = logs.get("dimse")

# PS3.7 C.5.x general status "Refused: Not Authorized".
STATUS_NOT_AUTHORIZED = 0x0124
STATUS_SUCCESS = 0x0000

# A-ASSOCIATE-RJ diagnostics, service-user source (PS3.8 9.3.4).
REJECT_REASONS = {
    1: "no reason given",
    2: "application context name not supported",
    3: "calling AE title not recognised",
    7: "called AE title not recognised",
}


def _calling_ae(event: Any) -> str:
    """The caller's AE title; at EVT_REQUESTED only the A-ASSOCIATE-RQ primitive has it."""
    requestor = event.assoc.requestor
    title = requestor.ae_title or getattr(requestor.primitive, "calling_ae_title", "") or ""
    return str(title).strip()


def _peer(event: Any) -> dict[str, Any]:
    requestor = event.assoc.requestor
    return {"peer": _calling_ae(event), "addr": f"{requestor.address}:{requestor.port}"}


class DimseServer:
    """Owns the pynetdicom application entity and its listening socket."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.policy = AccessPolicy.from_settings(settings)
        self.ae = AE(ae_title=settings.ae_title)
        self.ae.add_supported_context(Verification)
        self.ae.require_called_aet = True  # PS3.8 9.3.4: reject other called AE titles
        self._server: Any = None

    def start(self) -> tuple[str, int]:
        address = (self.settings["dimse.bind"], self.settings["dimse.port"])
        handlers: list[Any] = [
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ESTABLISHED, self._on_established),
            (evt.EVT_REJECTED, self._on_rejected),
            (evt.EVT_RELEASED, self._on_released),
            (evt.EVT_ABORTED, self._on_aborted),
            (evt.EVT_C_ECHO, self._on_echo),
        ]
        self._server = self.ae.start_server(address, block=False, evt_handlers=handlers)
        host, port = self._server.server_address[:2]
        return host, port

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server = None

    # --- association life cycle -------------------------------------------------------

    def _on_requested(self, event: Any) -> None:
        if not self.policy.may_associate(_calling_ae(event)):
            # PS3.8 9.3.4: rejected-permanent, service-user, calling AE title not recognised.
            assoc = event.assoc
            assoc.acse.send_reject(0x01, 0x01, 0x03)
            assoc.is_rejected = True  # tells pynetdicom not to negotiate further
            logs.event(log, "association rejected", reason=REJECT_REASONS[3], **_peer(event))
            assoc.kill()

    def _on_established(self, event: Any) -> None:
        logs.event(log, "association accepted", **_peer(event))

    def _on_rejected(self, event: Any) -> None:
        diagnostic = int(getattr(event.assoc.acceptor.primitive, "diagnostic", 0) or 0)
        reason = REJECT_REASONS.get(diagnostic, f"diagnostic {diagnostic}")
        logs.event(log, "association rejected", reason=reason, **_peer(event))

    def _on_released(self, event: Any) -> None:
        logs.event(log, "association released", **_peer(event))

    def _on_aborted(self, event: Any) -> None:
        logs.event(log, "association aborted", **_peer(event))

    # --- services ---------------------------------------------------------------------

    def _on_echo(self, event: Any) -> int:
        if not self.policy.allows(_calling_ae(event), "echo"):
            logs.event(log, "C-ECHO refused", reason="not authorized", **_peer(event))
            return STATUS_NOT_AUTHORIZED
        logs.event(log, "C-ECHO", status="success", **_peer(event))
        return STATUS_SUCCESS

"""Associations we open to peers, for the services where speed does not matter (C-ECHO,
Storage Commitment reports on a new association, migrate's queries): one helper instead of
a copy of the set-up in each command. pynetdicom does the protocol; our sockets turn Nagle's
algorithm off (a request spans several PDUs written one by one).
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator, Sequence
from typing import Any

from pynetdicom import AE
from pynetdicom.transport import AssociationSocket

from duckpacs.errors import NetworkError
from duckpacs.net.tls import handshake_problem

_original_create_socket = AssociationSocket._create_socket


def _create_socket(self: AssociationSocket, address: Any) -> socket.socket:
    sock = _original_create_socket(self, address)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


AssociationSocket._create_socket = _create_socket  # type: ignore[method-assign]


@contextlib.contextmanager
def associate(
    our_ae: str,
    peer: Any,
    contexts: Sequence[Any],
    *,
    timeout: float = 30.0,
    ext_neg: Sequence[Any] = (),
    evt_handlers: Sequence[Any] = (),
    max_pdu: int | None = None,
    tls_args: tuple[Any, str] | None = None,
) -> Iterator[Any]:
    """An established association to ``peer`` (anything with ``ae_title``, ``host`` and
    ``port``), released on leaving the block. ``contexts``: pynetdicom presentation
    contexts; ``tls_args``: (SSL context, server name) for DICOM TLS
    (``duckpacs.net.tls.client_context``). Raises :class:`NetworkError` saying why when it
    cannot be established."""
    ae = AE(ae_title=our_ae)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    if max_pdu is not None:
        ae.maximum_pdu_size = max_pdu
    where = f"{peer.ae_title} at {peer.host}:{peer.port}"
    try:
        assoc = ae.associate(
            peer.host, peer.port, contexts=list(contexts), ae_title=peer.ae_title,
            ext_neg=list(ext_neg) or None, evt_handlers=list(evt_handlers) or None,
            tls_args=tls_args,
        )  # fmt: skip
    except (OSError, ValueError, RuntimeError) as e:
        raise NetworkError(f"cannot associate with {where}: {e}") from e
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "did not accept an association"
        problem = None
        if tls_args is not None and not assoc.is_rejected:
            problem = handshake_problem(peer.host, peer.port, tls_args, timeout)
        raise NetworkError(f"{where} {why}" + (f": {problem}" if problem else ""))
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()

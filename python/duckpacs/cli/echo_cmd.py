"""``duckpacs echo PEER``: check a DICOM node answers C-ECHO (PS3.4 Annex A)."""

from __future__ import annotations

import argparse
import time

from pynetdicom import AE
from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

from duckpacs.cli.context import print_json, settings
from duckpacs.cli.peers import resolve_peer
from duckpacs.errors import NetworkError
from duckpacs.net.tls import client_context, handshake_problem


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "echo", parents=[common], help="send a C-ECHO to a peer (name, AE title or AE@host:port)"
    )
    p.add_argument("peer", help="configured peer name or AE title, or AE@host:port")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait (default 10)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_echo)


def cmd_echo(args: argparse.Namespace) -> int:
    s = settings(args)
    peer = resolve_peer(s, args.peer)
    ae = AE(ae_title=s.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = args.timeout
    ae.add_requested_context(Verification)
    started = time.perf_counter()
    tls_args = client_context(s, peer)
    assoc = ae.associate(peer.host, peer.port, ae_title=peer.ae_title, tls_args=tls_args)
    where = f"{peer.ae_title} at {peer.host}:{peer.port}" + (" over TLS" if tls_args else "")
    if not assoc.is_established:
        why = "rejected the association" if assoc.is_rejected else "did not accept an association"
        problem = None
        if tls_args is not None and not assoc.is_rejected:
            problem = handshake_problem(peer.host, peer.port, tls_args, args.timeout)
        raise NetworkError(f"{where} {why}" + (f": {problem}" if problem else ""))
    status = assoc.send_c_echo()
    assoc.release()
    elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
    code = int(status.Status) if "Status" in status else None
    if code != 0x0000:
        shown = "no response" if code is None else f"status 0x{code:04X}"
        raise NetworkError(f"C-ECHO to {where} failed: {shown}")
    if args.json:
        print_json(
            {
                "peer": peer.ae_title,
                "host": peer.host,
                "port": peer.port,
                "status": code,
                "ms": elapsed_ms,
            }
        )
    else:
        print(f"C-ECHO to {where}: success in {elapsed_ms} ms")
    return 0

"""``duckpacs send --to PEER [KEY=VALUE ...]``: C-STORE stored instances to a peer.

The instances go out as stored (byte for byte) when the peer accepts their transfer syntax,
else transcoded to an uncompressed one it accepted (see :mod:`duckpacs.server.retrieve`).
"""

from __future__ import annotations

import argparse
import sys

from pynetdicom import AE
from pynetdicom.association import Association

from duckpacs.archive.client import ClientArchive, open_client
from duckpacs.archive.types import InstanceRef
from duckpacs.cli.context import parse_keys, print_json, settings
from duckpacs.cli.peers import resolve_peer
from duckpacs.errors import DuckpacsError, NetworkError
from duckpacs.server import retrieve

LEVEL_OF_KEY = (("SOPInstanceUID", "IMAGE"), ("SeriesInstanceUID", "SERIES"))


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "send",
        parents=[common],
        help="C-STORE stored instances matching a query to a peer",
        description="Send the instances under every match of the query (PS3.4 C.2.2.2 "
        "matching, e.g. PatientID=123 or StudyDate=20240101-20240131) to a peer.",
    )
    p.add_argument(
        "--to", required=True, metavar="PEER", help="peer name, AE title or AE@host:port"
    )
    p.add_argument("query", nargs="*", metavar="KEY=VALUE", help="matching keys (DICOM keywords)")
    p.add_argument(
        "--level",
        choices=("PATIENT", "STUDY", "SERIES", "IMAGE"),
        help="query level (default: implied by the keys, else STUDY)",
    )
    p.add_argument("--timeout", type=float, default=30.0, help="network timeout in seconds")
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(func=cmd_send)


def cmd_send(args: argparse.Namespace) -> int:
    s = settings(args)
    peer = resolve_peer(s, args.to)
    query = parse_keys(args.query)
    level = args.level or next((lv for k, lv in LEVEL_OF_KEY if k in query), "STUDY")
    retrieve.install()
    archive = open_client(s)
    refs = archive.locate(level, query)
    if not refs:
        raise DuckpacsError(f"nothing matches {query or 'the empty query'} at {level} level")
    ae = AE(ae_title=s.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = args.timeout
    assoc = ae.associate(
        peer.host, peer.port, ae_title=peer.ae_title, contexts=retrieve.storage_contexts(refs)
    )
    if not assoc.is_established:
        raise NetworkError(f"{peer.ae_title} at {peer.host}:{peer.port} refused the association")
    counts = {"completed": 0, "warning": 0, "failed": 0}
    failed: list[str] = []
    try:
        for n, ref in enumerate(refs, 1):
            outcome = _send_one(assoc, archive, ref)
            counts[outcome] += 1
            if outcome == "failed":
                failed.append(ref.sop_instance_uid)
            if sys.stderr.isatty() and not args.json:
                print(f"\rsent {n}/{len(refs)}", end="", file=sys.stderr, flush=True)
    finally:
        if assoc.is_established:
            assoc.release()
    if sys.stderr.isatty() and not args.json:
        print(file=sys.stderr)
    summary = {"peer": peer.ae_title, "instances": len(refs), **counts, "failed_uids": failed}
    if args.json:
        print_json(summary)
    else:
        print(
            f"sent {len(refs)} instances to {peer.ae_title}: {counts['completed']} completed, "
            f"{counts['warning']} with warnings, {counts['failed']} failed"
        )
    if counts["failed"]:
        raise NetworkError(
            f"{counts['failed']} of {len(refs)} instances were not stored by the peer"
        )
    return 0


def _send_one(assoc: Association, archive: ClientArchive, ref: InstanceRef) -> str:
    try:
        status = retrieve.send_raw(assoc, retrieve.RawInstance(archive, ref))
    except (DuckpacsError, ValueError, OSError):
        return "failed"
    code = int(status.get("Status", 0xC000)) if status else 0xC000
    if code == 0x0000:
        return "completed"
    if code in (0x0001, 0x0107, 0x0116) or 0xB000 <= code <= 0xBFFF:
        return "warning"
    return "failed"

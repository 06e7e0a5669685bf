"""``duckpacs send --to PEER [KEY=VALUE ...]``: C-STORE stored instances to a peer.

The instances go out as stored (byte for byte) when the peer accepts their transfer syntax,
else transcoded to an uncompressed one it accepted, by the Rust C-STORE SCU
(``duckpacs_core::net::storescu``).
"""

from __future__ import annotations

import argparse
import sys

from duckpacs import _core
from duckpacs.archive.client import open_client
from duckpacs.cli.context import parse_keys, print_json, settings
from duckpacs.cli.peers import resolve_peer
from duckpacs.dicom import transcode
from duckpacs.errors import DuckpacsError, NetworkError

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
    archive = open_client(s)
    refs = archive.locate(level, query)
    if not refs:
        raise DuckpacsError(f"nothing matches {query or 'the empty query'} at {level} level")
    show = sys.stderr.isatty() and not args.json

    def progress(done: int, total: int) -> None:
        if show:
            print(f"\rsent {done}/{total}", end="", file=sys.stderr, flush=True)

    result = _core.send_stored(
        archive.store, peer.host, peer.port, s.ae_title, peer.ae_title,
        [(r.sop_instance_uid, r.sop_class_uid, r.transfer_syntax, *r.location) for r in refs],
        transcode.dataset_in, timeout=args.timeout, progress=progress,
    )  # fmt: skip
    if show:
        print(file=sys.stderr)
    failed = [uid for uid, _reason in result["failures"]]
    summary = {
        "peer": peer.ae_title,
        "instances": len(refs),
        "completed": result["completed"],
        "warning": result["warning"],
        "failed": result["failed"],
        "failed_uids": failed,
    }
    if args.json:
        print_json(summary)
    else:
        print(
            f"sent {len(refs)} instances to {peer.ae_title}: {result['completed']} completed, "
            f"{result['warning']} with warnings, {result['failed']} failed"
        )
        for uid, reason in result["failures"][:20]:
            print(f"failed: {uid}: {reason}", file=sys.stderr)
    if result["failed"]:
        raise NetworkError(
            f"{result['failed']} of {len(refs)} instances were not stored by the peer"
        )
    return 0

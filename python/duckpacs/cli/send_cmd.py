"""``duckpacs send --to PEER [KEY=VALUE ...]``: C-STORE stored instances to a peer, through
the forwarding queue (:mod:`duckpacs.routing.manual`).

The instances are queued for the peer like a routing rule's, so they get the same retries:
while ``duckpacs serve`` runs it sends them and the command waits for the outcome; with no
server, the command sends them itself and leaves what could not be sent in the queue for the
next ``serve``. Each instance goes out as stored when the peer accepts its transfer syntax,
else transcoded to an uncompressed one it accepted.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter

from duckpacs.archive.client import open_client
from duckpacs.cli.context import parse_keys, print_json, settings
from duckpacs.errors import DuckpacsError, NetworkError
from duckpacs.routing import manual
from duckpacs.routing.engine import deliverer_lock, open_queue

LEVEL_OF_KEY = (("SOPInstanceUID", "IMAGE"), ("SeriesInstanceUID", "SERIES"))


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "send",
        parents=[common],
        help="send stored instances matching a query to a peer (through the queue)",
        description="Queue the instances under every match of the query (PS3.4 C.2.2.2 "
        "matching, e.g. PatientID=123 or StudyDate=20240101-20240131) for a peer and see "
        "them sent: by the running server, else by this command. What cannot be sent stays "
        "queued and is retried (`duckpacs queue`).",
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
    p.add_argument(
        "--no-wait",
        action="store_true",
        help="return once queued when a server delivers (default: wait for the outcome)",
    )
    p.add_argument("--json", action="store_true", help="machine-readable summary")
    p.set_defaults(func=cmd_send)


def cmd_send(args: argparse.Namespace) -> int:
    s = settings(args)
    peer = s.peer(args.to)
    query = parse_keys(args.query)
    level = args.level or next((lv for k, lv in LEVEL_OF_KEY if k in query), "STUDY")
    archive = open_client(s)
    items = manual.instances_of(archive, level, query)
    if not items:
        raise DuckpacsError(f"nothing matches {query or 'the empty query'} at {level} level")
    show = sys.stderr.isatty() and not args.json

    def progress(done: int, total: int) -> None:
        if show:
            print(f"\rsent {done}/{total}", end="", file=sys.stderr, flush=True)

    queue = open_queue(s)
    try:
        outcome = manual.send(
            s, queue, deliverer_lock(s), peer.name, items, store=archive.store,
            locate=manual.locator(archive), wait=not args.no_wait, progress=progress,
        )  # fmt: skip
    finally:
        queue.close()
    if show:
        print(file=sys.stderr)
    sent, failed = outcome.count("sent"), outcome.count("failed")
    waiting = len(items) - sent - failed
    summary = {
        "peer": peer.ae_title,
        "instances": len(items),
        "completed": sent,
        "failed": failed,
        "waiting": waiting,
        "delivered_by": "this command" if outcome.delivered_here else "the server",
        "failures": [{"uid": u, "reason": r} for u, r in outcome.reasons()[:100]],
    }
    if args.json:
        print_json(summary)
    else:
        print(
            f"sent {sent} of {len(items)} instances to {peer.ae_title}: {failed} failed, "
            f"{waiting} waiting in the queue"
        )
        reasons = Counter(reason for _uid, reason in outcome.reasons())
        for reason, count in reasons.most_common(10):
            print(f"not sent ({count}): {reason}", file=sys.stderr)
    if args.no_wait and not outcome.delivered_here:
        return 0
    if failed or waiting:
        raise NetworkError(
            f"{failed + waiting} of {len(items)} instances were not stored by {peer.ae_title} "
            "yet; they stay queued (`duckpacs queue`)"
        )
    return 0

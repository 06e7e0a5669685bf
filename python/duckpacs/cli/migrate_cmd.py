"""``duckpacs migrate --from PEER --out DIR``: copy a legacy PACS study by study, resumably."""

from __future__ import annotations

import argparse
import re
from datetime import date, datetime
from pathlib import Path

from duckpacs.cli.context import print_json, settings
from duckpacs.errors import ConfigError
from duckpacs.ingest.migrate import RemotePeer, RemoteStudy, folder_receiver, migrate, open_journal
from duckpacs.ingest.progress import Progress

PEER_LITERAL = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:]+):(?P<port>\d{1,5})$")
JOURNAL_NAME = ".duckpacs-migrate.sqlite"


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "migrate",
        parents=[common],
        help="copy every study of a legacy PACS (C-FIND by date windows, C-GET per study)",
        description="Query PEER study by study in Study Date windows (split while an answer "
        "is too big), retrieve each study with C-GET, check the instance counts, and print a "
        "reconciliation of what the peer has against what arrived. Progress is kept in "
        f"DIR/{JOURNAL_NAME}: run the same command again to resume after an interruption. "
        "For now the instances are written as Part 10 files to DIR (named by SOP Instance "
        "UID), ready to be imported into the archive; nothing is stored in the archive by "
        "this command. Studies without a Study Date are not matched by date windows.",
    )
    p.add_argument(
        "--from",
        dest="peer",
        required=True,
        metavar="PEER",
        help="a peer from the configuration ([peers.NAME]) or AET@host:port",
    )
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the received files")
    p.add_argument("--since", metavar="DATE", help="first Study Date (YYYYMMDD; default 1900)")
    p.add_argument("--until", metavar="DATE", help="last Study Date (default today)")
    p.add_argument(
        "--window-limit",
        type=int,
        default=500,
        metavar="N",
        help="split a date window that returns N studies or more (default 500; set it at or "
        "below the peer's own C-FIND limit)",
    )
    p.add_argument("--max-studies", type=int, metavar="N", help="stop after N retrievals")
    p.add_argument("--calling-ae", metavar="AET", help="our AE title (default: dimse.ae_title)")
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    p.add_argument("--json", action="store_true", help="print the reconciliation as JSON")
    p.set_defaults(func=cmd_migrate)


def parse_date(value: str | None, default: date, what: str) -> date:
    """A date from YYYYMMDD or YYYY-MM-DD (a DA value, PS3.5 6.2)."""
    if not value:
        return default
    for fmt in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(value, fmt).date()
        except ValueError:
            continue
    raise ConfigError(f"{what} {value!r} is not YYYYMMDD or YYYY-MM-DD")


def resolve_peer(args: argparse.Namespace) -> RemotePeer:
    s = settings(args)
    calling = args.calling_ae or str(s.ae_title)
    literal = PEER_LITERAL.match(args.peer)
    if literal:
        port = int(literal["port"])
        if not 0 < port < 65536:
            raise ConfigError(f"--from {args.peer}: port out of range")
        return RemotePeer(literal["aet"], literal["host"], port, calling, args.timeout)
    peer = s.peers.get(args.peer)
    if peer is None:
        known = ", ".join(sorted(s.peers)) or "none configured"
        raise ConfigError(f"--from {args.peer}: unknown peer (known: {known}; or AET@host:port)")
    return RemotePeer(peer.ae_title, peer.host, peer.port, calling, args.timeout)


def cmd_migrate(args: argparse.Namespace) -> int:
    peer = resolve_peer(args)
    since = parse_date(args.since, date(1900, 1, 1), "--since")
    until = parse_date(args.until, date.today(), "--until")
    if args.window_limit < 1:
        raise ConfigError("--window-limit must be at least 1")
    out = Path(args.out)
    store = folder_receiver(out)
    with Progress("migrate") as progress, open_journal(out / JOURNAL_NAME) as journal:

        def receive(sop_uid: str, data: bytes) -> None:
            store(sop_uid, data)
            progress.advance(len(data))

        def on_study(study: RemoteStudy, received: int) -> None:
            expected = study.instances
            if expected is not None and received < expected:
                progress.reject(study.uid, f"received {received} of {expected} instances")

        rec = migrate(
            peer,
            journal,
            receive,
            since,
            until,
            window_limit=args.window_limit,
            max_studies=args.max_studies,
            on_study=on_study,
        )
    if args.json:
        print_json({"summary": progress.summary.as_json(), **rec.as_json()})
    else:
        print(progress.summary.line())
        for line in rec.lines():
            print(line)
    return 0 if rec.complete else 1

"""``duckpacs migrate --from PEER``: copy a legacy PACS into the archive, study by study."""

from __future__ import annotations

import argparse
import re
import threading
from datetime import date, datetime
from pathlib import Path

from duckpacs.cli.context import print_json, settings
from duckpacs.errors import ConfigError
from duckpacs.files.progress import Progress
from duckpacs.ingest.migrate import (
    MIGRATE_DIR,
    ArchiveTarget,
    FolderTarget,
    RemotePeer,
    RemoteStudy,
    Target,
    folder_receiver,
    journal_path,
    migrate,
    open_archive,
    open_journal,
)

PEER_LITERAL = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:]+):(?P<port>\d{1,5})$")
JOURNAL_NAME = ".duckpacs-migrate.sqlite"


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "migrate",
        parents=[common],
        help="copy every study of a legacy PACS into the archive (C-FIND by date windows, "
        "C-GET per study)",
        description="Query PEER study by study in Study Date windows (split while an answer "
        "is too big), retrieve each study with C-GET and store it in the archive (--data or "
        "the configured data folder) through the same path as `duckpacs import`: each study "
        f"is staged in DATA/{MIGRATE_DIR}/staging, imported, counted in the index and its "
        "staged files removed. The reconciliation compares the peer's instance counts with "
        "what the archive holds for each study. Progress is kept in a journal (one per peer "
        f"in DATA/{MIGRATE_DIR}): run the same command again to resume after an "
        "interruption; studies the archive no longer fully holds are fetched again. The "
        "archive is owned for the whole run: while `duckpacs serve` runs on it this refuses, "
        "or waits with --wait. With --out DIR the instances are written as Part 10 files to "
        f"DIR (named by SOP Instance UID, journal DIR/{JOURNAL_NAME}) instead, and nothing is "
        "stored. Studies without a Study Date are not matched by date windows. Exit code 1 "
        "while any study is not complete.",
    )
    p.add_argument(
        "--from",
        dest="peer",
        required=True,
        metavar="PEER",
        help="a peer from the configuration ([peers.NAME]) or AET@host:port",
    )
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write the received files to DIR instead of storing them in the archive",
    )
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
    p.add_argument(
        "--parallel",
        type=int,
        default=1,
        metavar="N",
        help="studies retrieved at once, one association each (default 1: some old PACS "
        "accept one association per caller; the import of a study always overlaps the "
        "retrieval of the next)",
    )
    p.add_argument("--calling-ae", metavar="AET", help="our AE title (default: dimse.ae_title)")
    p.add_argument("--timeout", type=float, default=60.0, help="network timeout in seconds")
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another process writing the archive (default: fail at once)",
    )
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
    max_pdu = int(s["dimse.max_pdu"])
    literal = PEER_LITERAL.match(args.peer)
    if literal:
        port = int(literal["port"])
        if not 0 < port < 65536:
            raise ConfigError(f"--from {args.peer}: port out of range")
        return RemotePeer(literal["aet"], literal["host"], port, calling, args.timeout, max_pdu)
    peer = s.peers.get(args.peer)
    if peer is None:
        known = ", ".join(sorted(s.peers)) or "none configured"
        raise ConfigError(f"--from {args.peer}: unknown peer (known: {known}; or AET@host:port)")
    return RemotePeer(peer.ae_title, peer.host, peer.port, calling, args.timeout, max_pdu)


def cmd_migrate(args: argparse.Namespace) -> int:
    peer = resolve_peer(args)
    since = parse_date(args.since, date(1900, 1, 1), "--since")
    until = parse_date(args.until, date.today(), "--until")
    if args.window_limit < 1:
        raise ConfigError("--window-limit must be at least 1")
    if not 1 <= args.parallel <= 16:
        raise ConfigError("--parallel must be 1 to 16")
    if args.out:
        out = Path(args.out)
        target = FolderTarget(folder_receiver(out))
        return _run(args, peer, target, out / JOURNAL_NAME, since, until, {})
    data_dir = settings(args).data_dir
    with open_archive(data_dir, args.wait) as archive:
        extra: dict[str, object] = {"archive": str(data_dir)}
        code = _run(args, peer, archive, journal_path(data_dir, peer), since, until, extra)
    return code


def _run(
    args: argparse.Namespace,
    peer: RemotePeer,
    target: Target,
    journal_file: Path,
    since: date,
    until: date,
    extra: dict[str, object],
) -> int:
    """Migrate into ``target``, then print the reconciliation; exit code 1 if incomplete."""
    lock = threading.Lock()
    with Progress("migrate") as progress, open_journal(journal_file) as journal:

        def on_instance(size: int) -> None:
            with lock:  # retrieval threads report here
                progress.advance(size)

        def on_study(study: RemoteStudy, received: int) -> None:
            expected = study.instances
            if expected is not None and received < expected:
                with lock:
                    progress.reject(study.uid, f"received {received} of {expected} instances")

        rec = migrate(
            peer,
            journal,
            target,
            since,
            until,
            window_limit=args.window_limit,
            max_studies=args.max_studies,
            parallel=args.parallel,
            on_study=on_study,
            on_instance=on_instance,
        )
    if isinstance(target, ArchiveTarget):
        extra = {**extra, **target.importer.counts.as_json()}
    if args.json:
        print_json({"summary": progress.summary.as_json(), **rec.as_json(), **extra})
    else:
        print(progress.summary.line())
        for line in rec.lines():
            print(line)
        if isinstance(target, ArchiveTarget):
            c = target.importer.counts
            print(f"stored {c.stored:,} new instances, {c.already:,} already archived")
    return 0 if rec.complete else 1

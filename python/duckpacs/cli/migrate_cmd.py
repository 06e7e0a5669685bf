"""``duckpacs migrate --from PEER``: copy a legacy PACS into the archive, study by study."""

from __future__ import annotations

import argparse
import re
import threading
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from duckpacs.cli.context import print_json, settings
from duckpacs.errors import ConfigError
from duckpacs.files.progress import Progress
from duckpacs.ingest.migrate import (
    MIGRATE_DIR,
    ArchiveTarget,
    FolderTarget,
    Journal,
    MoveDestination,
    Reconciliation,
    RemotePeer,
    RemoteStudy,
    Span,
    Target,
    journal_path,
    migrate,
    open_archive,
    open_journal,
    verify,
)
from duckpacs.ingest.migrate.reconcile import Verdict
from duckpacs.net.tls import dial_args

PEER_LITERAL = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:]+):(?P<port>\d{1,5})$")
JOURNAL_NAME = ".duckpacs-migrate.sqlite"


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "migrate",
        parents=[common],
        help="copy every study of a legacy PACS into the archive (C-FIND by date windows and "
        "by patient, C-GET or C-MOVE per study, every instance checked)",
        description="Query PEER study by study in Study Date windows (split by day, hour and "
        "Patient ID while an answer may be cut at the peer's limit), then list the studies no "
        "window matches (no Study Date, a date outside the span, no Study Time) by one query "
        "or patient by patient. Retrieve each study with C-GET, or with C-MOVE to our AE title "
        "when the peer refuses C-GET or some of its classes (the peer must know our AE title "
        "with this host and the DIMSE port as a move destination; migrate listens there while "
        "it runs), and store it in the archive (--data or the configured data folder) through "
        "the same door as C-STORE and `duckpacs import` (one duplicate rule), as each instance "
        "arrives. A study is complete when the archive holds every SOP Instance "
        "UID the peer lists for it. Progress is kept in a journal (one per peer in "
        f"DATA/{MIGRATE_DIR}): run the same command again to resume; studies the archive no "
        "longer fully holds are fetched again. --verify compares every study with the "
        "archive instance by instance and fetches nothing. The archive is owned for the "
        "whole run: while `duckpacs serve` runs on it this refuses, or waits with --wait. "
        "With --out DIR the instances are written as Part 10 files to DIR (named by SOP "
        f"Instance UID, journal DIR/{JOURNAL_NAME}) instead, and nothing is stored. Exit code "
        "1 while any study or instance is missing.",
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
    p.add_argument(
        "--since",
        metavar="DATE",
        help="first Study Date (YYYYMMDD); with --since or --until only studies in that span, "
        "and those without a Study Date, are migrated (default: every study)",
    )
    p.add_argument("--until", metavar="DATE", help="last Study Date (default today)")
    p.add_argument(
        "--verify",
        action="store_true",
        help="compare the SOP Instance UIDs the peer lists for every study with what is held; "
        "fetch nothing (the next run fetches what is missing)",
    )
    p.add_argument(
        "--window-limit",
        type=int,
        default=500,
        metavar="N",
        help="split a query that returns N answers or more (default 500; set it at or below "
        "the peer's own C-FIND limit if the peer ends cut answers with success)",
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
    p.add_argument(
        "--port",
        type=int,
        metavar="PORT",
        help="where C-MOVE results arrive if the peer refuses C-GET (default: dimse.port)",
    )
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


def parse_date(value: str | None, what: str) -> date | None:
    """A date from YYYYMMDD or YYYY-MM-DD (a DA value, PS3.5 6.2); None when not given."""
    if not value:
        return None
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
    return RemotePeer(
        peer.ae_title, peer.host, peer.port, calling, args.timeout, max_pdu, dial_args(s, peer)
    )


def move_destination(args: argparse.Namespace, peer: RemotePeer) -> MoveDestination:
    """Our AE title (the one we call the peer with) on the configured DIMSE address."""
    s = settings(args)
    return MoveDestination(
        peer.calling_ae, str(s["dimse.bind"]), int(s["dimse.port"]), int(s["dimse.max_pdu"])
    )


def cmd_migrate(args: argparse.Namespace) -> int:
    peer = resolve_peer(args)
    since = parse_date(args.since, "--since")
    until = parse_date(args.until, "--until")
    try:
        Span(since, until)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    if args.window_limit < 1:
        raise ConfigError("--window-limit must be at least 1")
    if not 1 <= args.parallel <= 16:
        raise ConfigError("--parallel must be 1 to 16")
    run = Run(args, peer, since, until, move_destination(args, peer))
    if args.out:
        out = Path(args.out)
        return run(FolderTarget.into(out), out / JOURNAL_NAME, {})
    data_dir = settings(args).data_dir
    with open_archive(data_dir, args.wait) as archive:
        return run(archive, journal_path(data_dir, peer), {"archive": str(data_dir)})


@dataclass(frozen=True)
class Run:
    """One invocation: migrate (or verify) into a target, print the reconciliation."""

    args: argparse.Namespace
    peer: RemotePeer
    since: date | None
    until: date | None
    move_to: MoveDestination

    def __call__(self, target: Target, journal_file: Path, extra: dict[str, object]) -> int:
        """Exit code 1 while anything is missing."""
        args = self.args
        journal_file.parent.mkdir(parents=True, exist_ok=True)
        name = "verify" if args.verify else "migrate"
        with Progress(name) as progress, open_journal(journal_file) as journal:
            if args.verify:
                rec = self._verify(journal, target, progress)
            else:
                rec = self._migrate(journal, target, progress)
        if isinstance(target, ArchiveTarget):
            extra = {**extra, **target.importer.counts.as_json()}
        if args.json:
            print_json({"summary": progress.summary.as_json(), **rec.as_json(), **extra})
            return 0 if rec.complete else 1
        if not args.verify:
            print(progress.summary.line())
        for line in rec.lines():
            print(line)
        if isinstance(target, ArchiveTarget) and not args.verify:
            c = target.importer.counts
            print(f"stored {c.stored:,} new instances, {c.already:,} already archived")
        return 0 if rec.complete else 1

    def _migrate(self, journal: Journal, target: Target, progress: Progress) -> Reconciliation:
        lock = threading.Lock()

        def on_instance(size: int) -> None:
            with lock:  # retrieval threads report here
                progress.advance(size)

        def on_study(study: RemoteStudy, received: int) -> None:
            expected = study.instances
            if expected is not None and received < expected:
                with lock:
                    progress.reject(study.uid, f"received {received} of {expected} instances")

        return migrate(
            self.peer,
            journal,
            target,
            self.since,
            self.until,
            window_limit=self.args.window_limit,
            max_studies=self.args.max_studies,
            parallel=self.args.parallel,
            move_to=self.move_to,
            on_study=on_study,
            on_instance=on_instance,
        )

    def _verify(self, journal: Journal, target: Target, progress: Progress) -> Reconciliation:
        def on_study(study: RemoteStudy, verdict: Verdict) -> None:
            progress.advance(0)
            if verdict.status != "done":
                progress.reject(study.uid, verdict.reason)

        return verify(
            self.peer,
            journal,
            target,
            self.since,
            self.until,
            window_limit=self.args.window_limit,
            on_study=on_study,
        )

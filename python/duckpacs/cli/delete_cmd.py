"""``duckpacs delete TAG=VALUE ...`` and ``duckpacs trash list|restore``: removing instances
through the trash (:mod:`duckpacs.archive.trash`).

``delete`` lists what matches and, with ``--yes``, moves it to the trash: gone from every
query and retrieval at once, restorable for ``archive.trash_days`` days, after which
``duckpacs compact`` reclaims the space. While ``duckpacs serve`` runs, the server carries
the delete out (its local socket); otherwise this process opens the archive. Every delete
and restore is a line in the audit log (``DATA/audit.log``).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import os
import socket
from collections.abc import Iterator
from typing import Any

from duckpacs.archive import ipc, layout
from duckpacs.archive.client import open_client
from duckpacs.archive.trash import Trash, audit, query_text
from duckpacs.cli.context import parse_keys, print_json, settings
from duckpacs.config import Settings
from duckpacs.errors import QueryError

LEVELS = ("study", "series", "image")
_SHOWN = {
    "study": ["PatientID", "PatientName", "StudyDate", "StudyDescription", "StudyInstanceUID"],
    "series": ["PatientID", "StudyInstanceUID", "Modality", "SeriesInstanceUID"],
    "image": ["PatientID", "SeriesInstanceUID", "SOPInstanceUID"],
}


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "delete",
        parents=[common],
        help="move studies, series or instances to the trash (lists them without --yes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "keys", nargs="+", metavar="TAG=VALUE",
        help="what to delete (PS3.4 C.2.2 matching: PatientID=123, PatientName=DOE*)",
    )  # fmt: skip
    p.add_argument("--level", choices=LEVELS, default="study", help="what each match is")
    p.add_argument("--yes", action="store_true", help="delete (else only list the matches)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_delete)
    t = subparsers.add_parser("trash", parents=[common], help="list or restore deleted instances")
    sub = t.add_subparsers(dest="trash_cmd", required=True)
    ls = sub.add_parser("list", parents=[common], help="what the trash holds")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.set_defaults(func=cmd_trash_list)
    rs = sub.add_parser("restore", parents=[common], help="put a deleted batch back")
    rs.add_argument("batch", metavar="BATCH", help="batch id (see `duckpacs trash list`)")
    rs.add_argument("--json", action="store_true", help="machine-readable output")
    rs.set_defaults(func=cmd_trash_restore)


def who() -> tuple[str, str]:
    """The local user and where the request comes from, for the audit log."""
    return getpass.getuser(), f"cli@{socket.gethostname()} pid {os.getpid()}"


@contextlib.contextmanager
def trash_door(s: Settings) -> Iterator[Any]:
    """The archive that carries out trash calls: the running server, else this process."""
    key = s.data_dir / layout.KEY_FILENAME
    if key.is_file():
        remote = ipc.RemoteArchive(ipc.socket_path(s.data_dir), key.read_bytes())
        if remote.reachable():
            yield remote
            return
    from duckpacs.archive.facade import Archive  # the index, DuckDB: only when needed

    with Archive.open(
        s.data_dir, on_conflict=s["archive.on_conflict"], writer_id=layout.MAINTENANCE_WRITER,
        committer=False,
    ) as archive:  # fmt: skip
        yield archive


def cmd_delete(args: argparse.Namespace) -> int:
    s = settings(args)
    query = {k: v for k, v in parse_keys(args.keys).items() if v}
    if not query:
        raise QueryError("delete needs at least one TAG=VALUE with a value (nothing matched "
                         "against an empty key is deleted)")  # fmt: skip
    matches = open_client(s).find(args.level, query, _SHOWN[args.level])
    if not args.yes:
        if args.json:
            print_json({"level": args.level, "matches": matches, "deleted": False})
        else:
            for m in matches:
                print("  ".join(str(m.get(k) or "") for k in _SHOWN[args.level]))
            print(f"{len(matches)} {args.level}(s) match; add --yes to move them to the trash")
        return 0
    user, source = who()
    with trash_door(s) as door:
        summary = door.discard(args.level, query, user=user, source=source)
    if summary["instances"]:
        audit(Trash(s.data_dir), "delete", summary, user=user, source=source)
    if args.json:
        print_json({**summary, "deleted": True})
    elif not summary["instances"]:
        print("nothing matched; nothing deleted")
    else:
        print(
            f"moved {summary['instances']} instance(s) of {len(summary['studies'])} study(ies) "
            f"to the trash as batch {summary['batch']} "
            f"(`duckpacs trash restore {summary['batch']}` puts them back)"
        )
    return 0


def cmd_trash_list(args: argparse.Namespace) -> int:
    s = settings(args)
    with trash_door(s) as door:
        batches = door.trash_list()
    if args.json:
        print_json(batches)
        return 0
    for b in batches:
        print(
            f"{b['batch']}  {b['deleted_at']}  by {b['user']}  {b['level']} "
            f"{query_text(b['query'])}  {b['instances']} instance(s)"
        )
    print(f"{len(batches)} batch(es) in the trash (kept {s['archive.trash_days']} days)")
    return 0


def cmd_trash_restore(args: argparse.Namespace) -> int:
    s = settings(args)
    user, source = who()
    with trash_door(s) as door:
        summary = door.restore(args.batch, user=user, source=source)
    audit(Trash(s.data_dir), "restore", summary, user=user, source=source)
    if args.json:
        print_json(summary)
        return 0
    print(f"restored {summary['restored']} instance(s) of batch {args.batch}")
    if summary["superseded"]:
        print(f"{summary['superseded']} stayed in the store: their UIDs were stored again since")
    return 0

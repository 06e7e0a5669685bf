"""``duckpacs protect STUDY`` and ``duckpacs unprotect STUDY``: studies the storage policy
never removes (neither recycling nor retention). Each change is audit-logged."""

from __future__ import annotations

import argparse
import getpass
from pathlib import Path

from duckpacs.archive import layout
from duckpacs.archive.client import open_client
from duckpacs.cli.context import print_json, settings
from duckpacs.errors import QueryError
from duckpacs.policy.protect import Protections
from duckpacs.web.audit import AUDIT_FILENAME, AuditLog


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "protect",
        parents=[common],
        help="protect a study from recycling and retention (--list shows them)",
    )
    p.add_argument("study", nargs="?", metavar="STUDY", help="Study Instance UID")
    p.add_argument("--note", default="", help="why (kept with the protection)")
    p.add_argument("--list", action="store_true", help="list the protected studies")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_protect)
    u = subparsers.add_parser("unprotect", parents=[common], help="lift a study's protection")
    u.add_argument("study", metavar="STUDY", help="Study Instance UID")
    u.set_defaults(func=cmd_unprotect)


def _audit(data_dir: Path, action: str, study: str) -> None:
    audit = AuditLog(data_dir / AUDIT_FILENAME)
    try:
        audit.record(user=getpass.getuser(), auth="cli", client=None, method=action.upper(),
                     path=f"/cli/{action}", status=200, study=study)  # fmt: skip
    finally:
        audit.close()


def cmd_protect(args: argparse.Namespace) -> int:
    s = settings(args)
    protections = Protections(s.data_dir / layout.POLICY_DB)
    if args.list or not args.study:
        entries = protections.entries()
        if args.json:
            print_json(entries)
        else:
            for e in entries:
                note = f"  {e['note']}" if e["note"] else ""
                print(f"{e['study']}  by {e['by']}{note}")
        return 0
    if not open_client(s).find("study", {"StudyInstanceUID": args.study}, []):
        raise QueryError(f"no study {args.study} in the archive")
    added = protections.protect(args.study, getpass.getuser(), args.note)
    _audit(s.data_dir, "protect", args.study)
    if args.json:
        print_json({"study": args.study, "protected": True, "already": not added})
    else:
        print(f"{args.study} is protected" + ("" if added else " (it already was)"))
    return 0


def cmd_unprotect(args: argparse.Namespace) -> int:
    s = settings(args)
    removed = Protections(s.data_dir / layout.POLICY_DB).unprotect(args.study)
    _audit(s.data_dir, "unprotect", args.study)
    print(f"{args.study} is no longer protected" if removed else f"{args.study} was not protected")
    return 0

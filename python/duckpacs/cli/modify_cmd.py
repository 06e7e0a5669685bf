"""``duckpacs modify --study UID KEYWORD=VALUE ...`` and ``duckpacs merge-patient --from ID
--into ID``: correcting patient and study data (:mod:`duckpacs.archive.corrections`).

Both list what would change (each attribute's current values -> the new value) and, with
``--yes``, change it: each instance gets a new version in the store with the corrected
header and the same SOP Instance UID; the bytes received stay in the store
(``duckpacs export --original``). While ``duckpacs serve`` runs, the server carries the
correction out (its local socket); otherwise this process opens the archive. Every
correction is a line in the audit log (``DATA/audit.log``).

merge-patient moves every study of the ``--from`` patient to the ``--into`` patient: Patient
ID, and the name, birth date and sex of the surviving patient, taken from one of its
archived studies unless given (``--name``, ``--birth-date``, ``--sex``).
"""

from __future__ import annotations

import argparse

from duckpacs.archive.client import open_client
from duckpacs.archive.corrections import audit, merge_changes, plain_id, summary_line
from duckpacs.archive.rewrite import EDITABLE, check_changes
from duckpacs.cli.context import parse_keys, print_json, settings
from duckpacs.cli.delete_cmd import trash_door, who
from duckpacs.errors import QueryError

_SHOWN = ["PatientID", "PatientName", "StudyDate", "StudyDescription", "StudyInstanceUID"]


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "modify",
        parents=[common],
        help="correct a study's patient or study data (lists the change without --yes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--study", required=True, metavar="UID", help="Study Instance UID")
    p.add_argument(
        "changes", nargs="+", metavar="KEYWORD=VALUE",
        help=f"new values; one of: {', '.join(sorted(EDITABLE))}",
    )  # fmt: skip
    p.add_argument("--yes", action="store_true", help="apply (else only show the change)")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_modify)
    m = subparsers.add_parser(
        "merge-patient",
        parents=[common],
        help="move every study of one Patient ID to another (lists them without --yes)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    m.add_argument("--from", dest="source", required=True, metavar="ID", help="patient to merge")
    m.add_argument("--into", required=True, metavar="ID", help="surviving patient's ID")
    m.add_argument("--name", help="surviving PatientName (default: from its archived studies)")
    m.add_argument("--birth-date", help="surviving PatientBirthDate (YYYYMMDD)")
    m.add_argument("--sex", help="surviving PatientSex (M, F, O)")
    m.add_argument("--yes", action="store_true", help="apply (else only show the change)")
    m.add_argument("--json", action="store_true", help="machine-readable output")
    m.set_defaults(func=cmd_merge)


def _run(args: argparse.Namespace, kind: str, query: dict[str, str],
         changes: dict[str, str]) -> int:  # fmt: skip
    s = settings(args)
    # Not kept: a read-only index open in this process would stop the door below from
    # opening it for writing.
    matches = open_client(s).find("study", query, _SHOWN)
    if not args.yes:
        before = {k: sorted({str(m.get(k) or "") for m in matches}) for k in changes}
        shown = {"changes": changes, "before": before}
        if args.json:
            print_json({"kind": kind, "query": query, "studies": matches, "changes": changes,
                        "before": before, "applied": False})  # fmt: skip
            return 0
        for m in matches:
            print("  ".join(str(m.get(k) or "") for k in _SHOWN))
        print(f"{len(matches)} study(ies) match; would change {summary_line(shown)}")
        print("add --yes to apply")
        return 0
    user, source = who()
    with trash_door(s) as door:
        summary = door.correct("study", query, changes, kind, user=user, source=source)
    if summary["batch"]:
        audit(s.data_dir, kind, summary, user=user, source=source)
    if args.json:
        print_json({**summary, "applied": True})
    elif not summary["matched"]:
        print("nothing matched; nothing changed")
    else:
        print(
            f"{kind}: {summary['instances']} of {summary['matched']} instance(s) in "
            f"{len(summary['studies'])} study(ies) now carry {summary_line(summary)} "
            f"(batch {summary['batch']}; the received bytes stay: export --original)"
        )
    return 0


def cmd_modify(args: argparse.Namespace) -> int:
    changes = check_changes(parse_keys(args.changes))
    return _run(args, "modify", {"StudyInstanceUID": args.study}, changes)


def cmd_merge(args: argparse.Namespace) -> int:
    source = plain_id(args.source, "--from")
    into = plain_id(args.into, "--into")
    if source == into:
        raise QueryError("--from and --into name the same patient")
    given = {"PatientName": args.name, "PatientBirthDate": args.birth_date,
             "PatientSex": args.sex}  # fmt: skip
    changes = merge_changes(open_client(settings(args)), into, given)
    return _run(args, "merge", {"PatientID": source}, changes)

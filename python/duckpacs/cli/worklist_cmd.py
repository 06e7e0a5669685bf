"""``duckpacs worklist add|list|remove|import``: the Modality Worklist's entries
(``DATA/worklist.sqlite``), usable while ``serve`` runs."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Any

from duckpacs.cli.context import print_json, settings
from duckpacs.errors import ConfigError

# Flag -> DICOM keyword of the entry.
FLAGS = {
    "patient_id": "PatientID",
    "patient_name": "PatientName",
    "birth_date": "PatientBirthDate",
    "sex": "PatientSex",
    "accession": "AccessionNumber",
    "modality": "Modality",
    "station_ae": "ScheduledStationAETitle",
    "date": "ScheduledProcedureStepStartDate",
    "time": "ScheduledProcedureStepStartTime",
    "procedure": "RequestedProcedureDescription",
    "procedure_id": "RequestedProcedureID",
    "step_id": "ScheduledProcedureStepID",
    "physician": "ScheduledPerformingPhysicianName",
    "referring": "ReferringPhysicianName",
    "study_uid": "StudyInstanceUID",
}
LIST_COLUMNS = ("id", "status", "PatientID", "PatientName", "AccessionNumber", "Modality",
                "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
                "ScheduledProcedureStepStartTime", "RequestedProcedureDescription")  # fmt: skip


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser("worklist", parents=[common], help="Modality Worklist entries")
    sub = p.add_subparsers(dest="worklist_command", required=True)
    add = sub.add_parser("add", parents=[common], help="schedule a procedure step")
    for flag, keyword in FLAGS.items():
        add.add_argument("--" + flag.replace("_", "-"), dest=flag, default="", help=keyword)
    add.add_argument("--json", action="store_true", help="machine-readable output")
    add.set_defaults(func=cmd_add)
    ls = sub.add_parser("list", parents=[common], help="list the entries")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    ls.add_argument("--active", action="store_true", help="only scheduled and in progress")
    ls.set_defaults(func=cmd_list)
    rm = sub.add_parser("remove", parents=[common], help="remove entries by id")
    rm.add_argument("ids", nargs="+", type=int, metavar="ID")
    rm.set_defaults(func=cmd_remove)
    imp = sub.add_parser(
        "import", parents=[common],
        help="add entries from a CSV file (header: DICOM keywords or the add command's flags)",
    )  # fmt: skip
    imp.add_argument("csv", type=Path, metavar="CSV")
    imp.add_argument("--json", action="store_true", help="machine-readable output")
    imp.set_defaults(func=cmd_import)


def _worklist(args: argparse.Namespace) -> Any:
    from duckpacs.worklist.store import Worklist

    return Worklist.from_settings(settings(args))


def cmd_add(args: argparse.Namespace) -> int:
    values = {kw: getattr(args, flag) for flag, kw in FLAGS.items() if getattr(args, flag)}
    entry_id = _add(_worklist(args), values, "cli")
    if args.json:
        print_json({"id": entry_id})
    else:
        print(f"worklist entry {entry_id} scheduled")
    return 0


def _add(worklist: Any, values: dict[str, str], source: str) -> int:
    from duckpacs.worklist.store import WorklistError

    try:
        return int(worklist.add(values, source=source))
    except WorklistError as e:
        raise ConfigError(str(e)) from e


def _relink(args: argparse.Namespace, worklist: Any) -> None:
    """Performed series stored since their N-SET are linked now, and entries whose study
    arrived complete (``worklist.complete_on_arrival``). Needs the archive's index; an
    archive with no index yet holds nothing to link."""
    from duckpacs.archive.client import open_client
    from duckpacs.errors import DuckpacsError
    from duckpacs.worklist.mpps import relink

    if not worklist.unheld_series() and not worklist.complete_on_arrival:
        return
    try:
        archive = open_client(settings(args))
    except (DuckpacsError, OSError):
        return
    relink(worklist, archive.find)
    worklist.complete_arrived(archive.find)


def cmd_list(args: argparse.Namespace) -> int:
    worklist = _worklist(args)
    _relink(args, worklist)
    entries = worklist.entries(include_done=not args.active)
    for entry in entries:
        entry["performed_series"] = (
            worklist.performed_series(entry["mpps_uid"]) if entry["mpps_uid"] else []
        )
    if args.json:
        print_json(entries)
        return 0
    writer = csv.writer(sys.stdout, delimiter="\t", lineterminator="\n")
    writer.writerow(LIST_COLUMNS + ("series held",))
    for e in entries:
        held = sum(1 for s in e["performed_series"] if s["held"])
        writer.writerow([e[c] for c in LIST_COLUMNS] + [f"{held}/{len(e['performed_series'])}"])
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    worklist = _worklist(args)
    missing = [i for i in args.ids if not worklist.remove(i)]
    if missing:
        raise ConfigError(f"no worklist entry {', '.join(map(str, missing))}")
    print(f"{len(args.ids)} worklist entries removed")
    return 0


def _row_values(row: dict[str, str], line: int) -> dict[str, str]:
    from duckpacs.worklist.store import KEYS

    values = {}
    for column, value in row.items():
        key = FLAGS.get((column or "").strip().lower().replace("-", "_"), (column or "").strip())
        if key not in KEYS:
            raise ConfigError(f"line {line}: unknown column {column!r}")
        if value and value.strip():
            values[key] = value.strip()
    return values


def cmd_import(args: argparse.Namespace) -> int:
    """Every row is checked before any is added: a bad file adds nothing."""
    worklist = _worklist(args)
    try:
        with args.csv.open(newline="", encoding="utf-8-sig") as f:
            rows = [_row_values(r, n) for n, r in enumerate(csv.DictReader(f), start=2)]
    except OSError as e:
        raise ConfigError(f"{args.csv}: {e.strerror or e}") from e
    from duckpacs.worklist.store import WorklistError

    for n, values in enumerate(rows, start=2):
        try:
            worklist.check(values)
        except WorklistError as e:
            raise ConfigError(f"{args.csv} line {n}: {e}") from e
    ids = [_add(worklist, values, "csv") for values in rows]
    if args.json:
        print_json({"ids": ids})
    else:
        print(f"{len(ids)} worklist entries scheduled from {args.csv}")
    return 0

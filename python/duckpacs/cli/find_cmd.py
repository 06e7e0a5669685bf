"""``duckpacs find``: query the archive index with C-FIND semantics (PS3.4 C.2.2.2).

The same engine answers C-FIND and QIDO-RS; this command opens the index read-only, so it runs
beside a stopped archive (the serving process owns the file while it runs).
"""

from __future__ import annotations

import argparse
import sys

from duckpacs.cli.context import parse_keys, print_json, settings
from duckpacs.errors import ArchiveLockedError
from duckpacs.index import backend

DEFAULT_KEYS = {
    "patient": ["PatientName", "PatientBirthDate", "NumberOfPatientRelatedStudies"],
    "study": [
        "PatientID",
        "PatientName",
        "StudyDate",
        "StudyDescription",
        "ModalitiesInStudy",
        "NumberOfStudyRelatedInstances",
    ],
    "series": [
        "StudyInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
    ],
    "image": ["SeriesInstanceUID", "InstanceNumber", "SOPClassUID"],
}


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "find",
        parents=[common],
        help="query the index (C-FIND matching rules)",
        description="Match TAG=VALUE keys at one level with DICOM rules (PS3.4 C.2.2.2): empty "
        "value = universal, * and ? = wildcards, A-B = date/time range, a\\b = list. TAG is a "
        "keyword (PatientName), gggg,eeee or ggggeeee; any attribute, private ones included.",
    )
    p.add_argument("keys", nargs="*", metavar="TAG=VALUE", help="matching keys")
    p.add_argument(
        "--level",
        default="study",
        choices=["patient", "study", "series", "image"],
        help="query level (default: study)",
    )
    p.add_argument(
        "-r",
        "--return",
        dest="return_keys",
        action="append",
        default=[],
        metavar="TAG",
        help="also return TAG (repeatable)",
    )
    p.add_argument(
        "--fuzzy",
        action="store_true",
        help="case-insensitive person names with an implied trailing *",
    )
    p.add_argument(
        "--combined-datetime",
        action="store_true",
        help="match date and time keys as one datetime range",
    )
    p.add_argument("--limit", type=int, help="at most N results")
    p.add_argument("--offset", type=int, default=0, help="skip the first N results")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_find)


def cmd_find(args: argparse.Namespace) -> int:
    s = settings(args)
    query = parse_keys(args.keys)
    keys = [*DEFAULT_KEYS[args.level], *args.return_keys]
    try:
        with backend.open_index(s.data_dir, read_only=True) as index:
            rows = index.find(
                args.level,
                query,
                keys,
                fuzzy=args.fuzzy,
                limit=args.limit,
                offset=args.offset,
                combined_datetime=args.combined_datetime,
            )
    except ArchiveLockedError:
        # `duckpacs serve` owns the index (DuckDB allows one writing process): ask it instead.
        if args.combined_datetime:
            raise ArchiveLockedError(
                "--combined-datetime is answered only with the archive stopped; "
                "the running server owns the index"
            ) from None
        from duckpacs.archive.client import open_client

        rows = open_client(s).find(args.level, query, keys, args.fuzzy, args.limit, args.offset)
    if args.json:
        print_json(rows)
        return 0
    print_table(rows)
    return 0


def print_table(rows: list[dict[str, object]]) -> None:
    """Rows as aligned columns (sequences shown as their item count)."""
    if not rows:
        print("no matches", file=sys.stderr)
        return
    names = list(rows[0])

    def cell(value: object) -> str:
        if value is None:
            return ""
        if isinstance(value, list):
            return f"<{len(value)} items>"
        return str(value)

    table = [[cell(r.get(n)) for n in names] for r in rows]
    widths = [min(64, max(len(n), *(len(row[i]) for row in table))) for i, n in enumerate(names)]
    print("  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip())
    for row in table:
        print("  ".join(c[:w].ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    print(f"{len(rows)} match{'es' if len(rows) != 1 else ''}", file=sys.stderr)

"""``duckpacs find``: query the archive index with C-FIND semantics (PS3.4 C.2.2.2).

The same engine answers C-FIND and QIDO-RS; this command opens the index read-only, so it runs
beside a stopped archive (the serving process owns the file while it runs).
"""

from __future__ import annotations

import argparse
import sys

from duckpacs.cli.context import print_json, settings
from duckpacs.errors import QueryError
from duckpacs.index import Index

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


def parse_keys(items: list[str]) -> dict[str, str]:
    """``TAG=VALUE`` arguments as a query mapping (``TAG=`` asks for the key as return key)."""
    query: dict[str, str] = {}
    for item in items:
        tag, sep, value = item.partition("=")
        if not sep or not tag.strip():
            raise QueryError(f"expected TAG=VALUE, got {item!r}")
        query[tag.strip()] = value
    return query


def cmd_find(args: argparse.Namespace) -> int:
    s = settings(args)
    query = parse_keys(args.keys)
    keys = [*DEFAULT_KEYS[args.level], *args.return_keys]
    with Index.open(s.data_dir, read_only=True) as index:
        rows = index.find(
            args.level,
            query,
            keys,
            fuzzy=args.fuzzy,
            limit=args.limit,
            offset=args.offset,
            combined_datetime=args.combined_datetime,
        )
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

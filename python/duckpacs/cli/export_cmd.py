"""``duckpacs export [TAG=VALUE ...] --out DIR``: archived instances out as Part 10 files.

The query has the syntax of ``duckpacs find`` (C-FIND matching, PS3.4 C.2.2.2); the files are
byte-exact copies of what was received unless ``--anonymize`` (PS3.15 Annex E Basic Profile).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from duckpacs.cli.context import parse_keys, print_json, settings
from duckpacs.export.archive_export import export
from duckpacs.files.progress import Progress


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "export",
        parents=[common],
        help="write archived instances matching a query as DICOM files (zip, DICOMDIR)",
        description="Select instances with TAG=VALUE keys (as `duckpacs find`; no key = "
        "everything) and write them byte for byte as Part 10 files.",
    )
    p.add_argument("keys", nargs="*", metavar="TAG=VALUE", help="matching keys")
    p.add_argument(
        "--level",
        default="study",
        choices=["patient", "study", "series", "image"],
        help="query level (default: study)",
    )
    p.add_argument(
        "--out", required=True, metavar="DIR", help="new or empty folder (the zip with --zip)"
    )
    p.add_argument(
        "--layout",
        default="hierarchy",
        choices=["flat", "hierarchy"],
        help="flat: UID.dcm; hierarchy: PatientID/Study/Series/UID.dcm (default)",
    )
    p.add_argument(
        "--dicomdir",
        action="store_true",
        help="lay out as CD media with a DICOMDIR (PS3.11 STD-GEN-CD)",
    )
    p.add_argument("--zip", action="store_true", help="write one zip file named by --out")
    p.add_argument(
        "--anonymize",
        action="store_true",
        help="apply the PS3.15 Annex E Basic Profile (consistent UID remapping)",
    )
    p.add_argument(
        "--original",
        action="store_true",
        help="write the bytes first received for each instance, before any correction "
        "(`duckpacs modify`); by default the current version",
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    s = settings(args)
    progress = Progress("export")
    result = export(
        s.data_dir,
        Path(args.out),
        level=args.level,
        query=parse_keys(args.keys),
        layout=args.layout,
        as_zip=args.zip,
        dicomdir=args.dicomdir,
        anonymize=args.anonymize,
        original=args.original,
        progress=progress,
    )
    if args.json:
        print_json(result.as_json())
        return 0
    print(f"exported {len(result.files):,} files ({result.bytes / 1e6:,.1f} MB) to {result.target}")
    if result.dicomdir is not None:
        for r in result.dicomdir.rejected:
            print(f"not on the media: {r.path}: {r.reason}")
    if result.anonymized is not None:
        print("anonymized (PS3.15 Annex E Basic Profile):")
        for what, n in result.anonymized.removed_summary().items():
            print(f"  {what} x{n}")
    return 0

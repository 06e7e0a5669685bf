"""``duckpacs import-scans MANIFEST.csv``: digitised film to DICOM instances in the archive."""

from __future__ import annotations

import argparse

from duckpacs.cli.context import print_json, settings
from duckpacs.files.progress import Progress, write_report
from duckpacs.ingest.scans import (
    COLUMNS,
    BadRow,
    ScanResult,
    ScanRow,
    convert_manifest,
    read_manifest,
    store_manifest,
)


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "import-scans",
        parents=[common],
        help="store scanned film/paper images listed in a CSV manifest as DICOM instances",
        description="Convert each row of MANIFEST.csv (an image file and its patient/study "
        "data) into a DICOM instance: Secondary Capture by default, or DX (For Presentation) "
        "or CR when the row's modality column says so. Rows of the same patient and study "
        "share a study; pixels are stored losslessly. The instances are stored in the "
        "archive (--data or the configured data folder) like `duckpacs import` does: "
        "running the same manifest again stores nothing twice (UIDs and bytes are derived "
        "from the rows and images). While `duckpacs serve` owns the archive this refuses, or "
        "waits with --wait. With --out DIR the Part 10 files are written to DIR "
        "(DIR/<study>/<series>/<instance>.dcm) instead, and nothing is stored. "
        f"Manifest columns (header row required): {', '.join(COLUMNS)}. Image paths are "
        "relative to the manifest's folder; dates are YYYYMMDD or YYYY-MM-DD. Bad rows are "
        "reported with their row number (the header is row 1) and the exit code is 1.",
    )
    p.add_argument("manifest", metavar="MANIFEST.csv", help="the CSV manifest")
    p.add_argument(
        "--out",
        metavar="DIR",
        help="write the Part 10 files to DIR instead of storing them in the archive",
    )
    p.add_argument(
        "--wait",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="wait this long for another process writing the archive (default: fail at once)",
    )
    p.add_argument("--report", metavar="FILE.json", help="write every bad row and its reason")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_import_scans)


def cmd_import_scans(args: argparse.Namespace) -> int:
    total = sum(1 for _ in read_manifest(args.manifest))
    data_dir = None if args.out else settings(args).data_dir
    with Progress("import-scans", total_files=total) as progress:

        def on_row(entry: ScanRow | BadRow, size: int) -> None:
            if isinstance(entry, BadRow):
                progress.reject(f"row {entry.row}", entry.reason)
            else:
                progress.advance(size)

        if data_dir is None:
            result = convert_manifest(args.manifest, args.out, on_row=on_row)
        else:
            result = store_manifest(args.manifest, data_dir, wait=args.wait, on_row=on_row)
    summary = progress.summary
    if args.report:
        write_report(args.report, summary, extra=result.as_json())
    if args.json:
        print_json({"summary": summary.as_json(), **result.as_json()})
    else:
        print(summary.line())
        print(_outcome(result, args.out))
        for bad in result.bad_rows:
            print(f"row {bad.row}: {bad.reason}")
    return 1 if result.bad_rows else 0


def _outcome(result: ScanResult, out: str | None) -> str:
    if result.archive is None:
        return f"{len(result.written)} instances in {len(result.studies)} studies under {out}"
    return (
        f"{len(result.archived)} instances in {len(result.studies)} studies: stored "
        f"{result.stored}, already archived {result.already} ({result.archive})"
    )

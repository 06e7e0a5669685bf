"""``duckpacs import-scans MANIFEST.csv --out DIR``: digitised film to DICOM instances."""

from __future__ import annotations

import argparse

from duckpacs.cli.context import print_json
from duckpacs.ingest.progress import Progress, write_report
from duckpacs.ingest.scans import COLUMNS, BadRow, ScanRow, convert_manifest, read_manifest


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "import-scans",
        parents=[common],
        help="turn scanned film/paper images listed in a CSV manifest into DICOM files",
        description="Convert each row of MANIFEST.csv (an image file and its patient/study "
        "data) into a DICOM instance: Secondary Capture by default, or DX (For Presentation) "
        "or CR when the row's modality column says so. Rows of the same patient and study "
        "share a study; pixels are stored losslessly. For now the instances are written as "
        "Part 10 files to DIR (DIR/<study>/<series>/<instance>.dcm), ready to be imported "
        "into the archive later; nothing is stored in the archive by this command. "
        f"Manifest columns (header row required): {', '.join(COLUMNS)}. Image paths are "
        "relative to the manifest's folder; dates are YYYYMMDD or YYYY-MM-DD.",
    )
    p.add_argument("manifest", metavar="MANIFEST.csv", help="the CSV manifest")
    p.add_argument("--out", required=True, metavar="DIR", help="folder for the Part 10 files")
    p.add_argument("--report", metavar="FILE.json", help="write every bad row and its reason")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=cmd_import_scans)


def cmd_import_scans(args: argparse.Namespace) -> int:
    total = sum(1 for _ in read_manifest(args.manifest))
    with Progress("import-scans", total_files=total) as progress:

        def on_row(entry: ScanRow | BadRow, size: int) -> None:
            if isinstance(entry, BadRow):
                progress.reject(f"row {entry.row}", entry.reason)
            else:
                progress.advance(size)

        result = convert_manifest(args.manifest, args.out, on_row=on_row)
    summary = progress.summary
    if args.report:
        write_report(args.report, summary, extra=result.as_json())
    if args.json:
        print_json({"summary": summary.as_json(), **result.as_json()})
    else:
        print(summary.line())
        print(f"{len(result.written)} instances in {len(result.studies)} studies under {args.out}")
        for bad in result.bad_rows:
            print(f"row {bad.row}: {bad.reason}")
    return 1 if result.bad_rows else 0

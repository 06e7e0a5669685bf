"""``duckpacs dump FILE [--json]``: print a DICOM file's elements or its DICOM JSON model.

The parsing is done by the Rust core (``duckpacs._core``). ``--json`` prints the DICOM JSON
model of PS3.18 F.2; bulk data (Pixel Data and binary values) is never inlined: it becomes a
``BulkDataURI`` when ``--bulk-data-uri`` is given and is left out otherwise (PS3.18 F.2.7).
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
from pathlib import Path

from duckpacs import _core
from duckpacs.errors import ParseError


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "dump",
        parents=[common],
        help="print the elements of a DICOM file (or its DICOM JSON model with --json)",
        description="Print the elements of a DICOM file: Part 10 files, files without "
        "preamble or meta, and bare datasets; '.gz' files are decompressed first.",
    )
    p.add_argument("file", type=Path, metavar="FILE", help="DICOM file to read")
    p.add_argument("--json", action="store_true", help="print the DICOM JSON model (PS3.18 F.2)")
    p.add_argument(
        "--bulk-data-uri",
        metavar="PREFIX",
        help="with --json: write bulk data as BulkDataURI PREFIX<offset>/<length> "
        "(default: leave it out)",
    )
    p.add_argument(
        "--inline-threshold",
        type=int,
        default=0,
        metavar="BYTES",
        help="with --json: write binary values up to BYTES long as InlineBinary (default 0)",
    )
    p.add_argument("--meta", action="store_true", help="with --json: include group 0002")
    p.add_argument(
        "--transfer-syntax",
        metavar="UID",
        help="transfer syntax of a bare dataset (default: detected from the content)",
    )
    p.set_defaults(func=cmd_dump)


def read_input(path: Path) -> bytes:
    """The bytes of ``path``, gunzipped when the name ends in ``.gz``."""
    data = path.read_bytes()
    if path.suffix == ".gz":
        return gzip.decompress(data)
    return data


def cmd_dump(args: argparse.Namespace) -> int:
    """Print the dump of ``args.file``; parse errors surface as ``duckpacs: error: ...``."""
    data = read_input(args.file)
    try:
        _write(args, data)
    except ParseError as e:
        raise ParseError(f"{args.file}: {e}") from e
    except BrokenPipeError:
        # The reader (e.g. `| head`) went away: not an error of ours.
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - keeps the interpreter's flush quiet
    return 0


def _write(args: argparse.Namespace, data: bytes) -> None:
    if args.json:
        text = _core.dump_json(
            data,
            args.transfer_syntax,
            bulk_data_uri=args.bulk_data_uri,
            inline_threshold=max(args.inline_threshold, 0),
            include_meta=args.meta,
        )
        json.dump(json.loads(text), sys.stdout, indent=2, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(_core.dump_text(data, args.transfer_syntax))

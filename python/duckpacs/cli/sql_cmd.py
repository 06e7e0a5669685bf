"""``duckpacs sql``: read-only SQL over the archive's metadata (dose surveys, audits, counts).

Tables and views (all read-only here):

- ``patients``, ``studies``, ``series``: one row per entity with the key attributes as typed
  columns (dates DATE, times TIME) and the computed keys (``number_of_study_related_instances``,
  ``modalities_in_study``, ...);
- ``instances``: one row per instance: every key attribute, plus where it is stored (``pack``,
  ``offset``, ``length``), ``sha256``, ``size``, ``transfer_syntax``, ``received_at``,
  ``source_ae``;
- ``attributes``: every value of every element of every instance that is not one of the
  typed columns of ``instances`` (so nested, private and all other attributes): ``iid``,
  ``parent`` item path, ``tag`` as a number, ``vr``, ``creator``, ``vm_index``, ``value`` as
  text, ``num`` as a number;
- ``elements``: ``attributes`` joined to the instance UIDs and the dictionary keyword, with
  ``tag`` as ``GGGGEEEE`` text; ``dicom_dictionary``: tag, keyword, VR and name.

Example: ``duckpacs sql "SELECT keyword, avg(num) FROM elements WHERE keyword = 'EchoTime'
GROUP BY ALL"``.

Dialect: DuckDB's SQL on the embedded index; on a PostgreSQL index (``[index] backend =
"postgres"``) PostgreSQL's SQL, one statement, in a read-only transaction (same tables and
views; ``tag`` numbers are ``bigint``, lists are arrays: ``'MR' = ANY(modalities_in_study)``).

Output: ``table`` (on a terminal), ``csv`` (RFC 4180, header line; DuckDB's CSV writer),
``json`` (an array of objects, dates and times as text) or ``parquet`` (needs ``--output``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from duckpacs.cli.context import settings
from duckpacs.errors import ConfigError
from duckpacs.index import backend
from duckpacs.index.base import IndexBackend
from duckpacs.index.output import Rows

FORMATS = ("table", "csv", "json", "parquet")


def register(subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = subparsers.add_parser(
        "sql",
        parents=[common],
        help="read-only SQL over the index (CSV/JSON/Parquet output)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("query", metavar="SQL", help="one or more SELECT statements")
    p.add_argument(
        "--format",
        choices=FORMATS,
        default=None,
        help="output format (default: table on a terminal, else csv)",
    )
    p.add_argument("--json", action="store_true", help="same as --format json")
    p.add_argument("-o", "--output", metavar="FILE", help="write to FILE (needed for parquet)")
    p.set_defaults(func=cmd_sql)


def cmd_sql(args: argparse.Namespace) -> int:
    s = settings(args)
    fmt = "json" if args.json else args.format
    if fmt is None:
        fmt = "table" if sys.stdout.isatty() and not args.output else "csv"
    if fmt == "parquet" and not args.output:
        raise ConfigError("--format parquet needs --output FILE")
    output = Path(args.output) if args.output else None
    with backend.open_index(s.data_dir, read_only=True) as index:
        if fmt in ("csv", "parquet"):
            export(index, args.query, fmt, output)
            return 0
        rows = index.sql(args.query)
    text = _json_text(rows) if fmt == "json" else _table_text(rows)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")
    return 0


def export(index: IndexBackend, query: str, fmt: str, output: Path | None) -> None:
    """Have DuckDB write the result as ``fmt`` to ``output``, or to stdout through a
    temporary file (its writers write files)."""
    if output is not None:
        index.export(query, output, fmt)
        return
    with tempfile.TemporaryDirectory(prefix="duckpacs-sql-") as tmp:
        path = Path(tmp) / f"result.{fmt}"
        index.export(query, path, fmt)
        with path.open(encoding="utf-8", newline="") as f:
            shutil.copyfileobj(f, sys.stdout)


def _json_text(rows: Rows) -> str:
    return json.dumps(rows.to_pylist(), indent=2, default=str, ensure_ascii=False) + "\n"


def _table_text(rows: Rows) -> str:
    cells = [[("" if v is None else str(v)) for v in row] for row in rows.rows]
    names = rows.columns
    widths = [min(48, max([len(n)] + [len(r[i]) for r in cells])) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c[:w].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells
    ]
    return "\n".join(lines) + f"\n({len(cells)} rows)\n"

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
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pyarrow as pa

from duckpacs.cli.context import settings
from duckpacs.errors import ConfigError
from duckpacs.index import Index

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
    with Index.open(s.data_dir, read_only=True) as index:
        table = index.sql(args.query)
    write(table, fmt, Path(args.output) if args.output else None)
    return 0


def write(table: pa.Table, fmt: str, output: Path | None) -> None:
    """Write ``table`` as ``fmt`` to ``output`` (stdout when None)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        assert output is not None
        pq.write_table(table, output)
        return
    if fmt == "csv":
        import pyarrow.csv as pacsv

        sink = pa.BufferOutputStream()
        pacsv.write_csv(table, sink)
        text = sink.getvalue().to_pybytes().decode("utf-8")
    elif fmt == "json":
        text = json.dumps(table.to_pylist(), indent=2, default=str, ensure_ascii=False) + "\n"
    else:
        text = _table_text(table)
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def _table_text(table: pa.Table) -> str:
    rows = [[("" if v is None else str(v)) for v in row.values()] for row in table.to_pylist()]
    names = table.column_names
    widths = [min(48, max([len(n)] + [len(r[i]) for r in rows])) for i, n in enumerate(names)]
    lines = ["  ".join(n.ljust(w) for n, w in zip(names, widths, strict=True)).rstrip()]
    lines += [
        "  ".join(c[:w].ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows
    ]
    return "\n".join(lines) + f"\n({len(rows)} rows)\n"

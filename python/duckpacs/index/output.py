"""Results of read-only SQL over the index (``Index.sql``, ``duckpacs sql``) as plain Python
values or files, without an Arrow library in Python.

:class:`Rows` is a query's result held in memory: column names, DuckDB type names, rows.
:func:`write_file` has DuckDB's own CSV and Parquet writers write a query's result. The index
connection may not touch files (``enable_external_access`` is off, so SQL typed by a user
cannot read or write any), so the result streams through the Arrow C stream interface into a
private in-memory connection whose only statement is that write.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb

from duckpacs.errors import QueryError

FILE_FORMATS = ("csv", "parquet")


@dataclass(frozen=True)
class Rows:
    """A materialised query result.

    Attributes
    ----------
    columns : column names, in order.
    types : the DuckDB type of each column (``VARCHAR``, ``DATE``, ``BIGINT[]``, ...).
    rows : one tuple per row, values as DuckDB's Python client gives them (``str``, ``int``,
        ``float``, ``datetime.date``/``time``/``datetime``, ``list``, ``dict``, ``None``).
    """

    columns: list[str]
    types: list[str]
    rows: list[tuple[Any, ...]]

    @classmethod
    def of(cls, relation: duckdb.DuckDBPyRelation) -> Rows:
        """Run ``relation`` and keep what it returns."""
        return cls(list(relation.columns), [str(t) for t in relation.types], relation.fetchall())

    @property
    def num_rows(self) -> int:
        return len(self.rows)

    def __len__(self) -> int:
        return len(self.rows)

    def to_pylist(self) -> list[dict[str, Any]]:
        """One dict per row, column name -> value."""
        return [dict(zip(self.columns, row, strict=True)) for row in self.rows]


class _Stream:
    """A relation seen only through ``__arrow_c_stream__``: DuckDB refuses to scan a relation
    of another connection directly, but takes any Arrow stream."""

    def __init__(self, relation: duckdb.DuckDBPyRelation) -> None:
        self._relation = relation

    def __arrow_c_stream__(self, requested_schema: object | None = None) -> object:
        return self._relation.__arrow_c_stream__(requested_schema)


def write_file(relation: duckdb.DuckDBPyRelation, path: Path, fmt: str) -> None:
    """Write the result of ``relation`` to ``path`` as ``fmt`` (``csv``: RFC 4180 with a
    header line, ``parquet``), streaming (the result is never held in Python)."""
    if fmt not in FILE_FORMATS:
        raise ValueError(f"unknown file format {fmt!r}")
    writer = duckdb.connect(":memory:")
    try:
        source = writer.from_arrow(_Stream(relation))
        if fmt == "csv":
            source.write_csv(str(path), header=True)
        else:
            source.write_parquet(str(path))
    except duckdb.IOException as e:
        raise OSError(f"{path}: cannot write ({e})") from e
    except duckdb.Error as e:
        raise QueryError(f"SQL: {e}") from e
    finally:
        writer.close()

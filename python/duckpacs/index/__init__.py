"""The archive index: DuckDB fed by Arrow header batches, queried with PS3.4 C.2.2.2 semantics.

- :class:`Index` (:mod:`duckpacs.index.db`): open, add_batch, find, count, locations, sql.
- :mod:`duckpacs.index.schema`: the Arrow batch contract and the DuckDB tables.
- :mod:`duckpacs.index.query`: the query compiler (values, model, conditions, sql, results).
- :func:`header_batch` (Rust, ``duckpacs._core.index_batch``): header batches from raw
  instance bytes, the ingest path (the tests build the same batch with pydicom in
  ``tests/index_rows.py``, their oracle).
"""

from duckpacs._core import HeaderBatch
from duckpacs._core import index_batch as header_batch
from duckpacs.index.db import INDEX_FILENAME, Index, index_path
from duckpacs.index.schema import BATCH_SCHEMA

__all__ = ["BATCH_SCHEMA", "INDEX_FILENAME", "HeaderBatch", "Index", "header_batch", "index_path"]

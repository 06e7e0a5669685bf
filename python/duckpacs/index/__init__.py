"""The archive index: DuckDB fed by Arrow header batches, queried with PS3.4 C.2.2.2 semantics.

- :class:`Index` (:mod:`duckpacs.index.db`): open, add_batch, find, count, locations, sql.
- :mod:`duckpacs.index.schema`: the Arrow batch contract and the DuckDB tables.
- :mod:`duckpacs.index.matching`: the query compiler.
- :mod:`duckpacs.index.rows`: header batches built with pydicom.
"""

from duckpacs.index.db import INDEX_FILENAME, Index, index_path
from duckpacs.index.schema import BATCH_SCHEMA

__all__ = ["BATCH_SCHEMA", "INDEX_FILENAME", "Index", "index_path"]

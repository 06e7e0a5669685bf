"""The query engine: PS3.4 C.2.2.2 attribute matching compiled to parameterised DuckDB SQL.

A query is a mapping of attribute (keyword or ``ggggeeee``) to a DICOM query value. Each key
becomes one SQL condition, all values travel as parameters. Key attributes are matched on the
typed columns of the level tables; every other attribute (private ones too) on the long
``attributes`` table, where one row holds one value: a multi-valued attribute matches when any
of its values does.

Rules (PS3.4 C.2.2.2):

- empty value, or ``*`` alone: universal matching (C.2.2.2.3);
- UI with ``\\`` or a Python list: list of UID matching (C.2.2.2.2);
- ``*`` / ``?`` in any other string: wildcard matching (C.2.2.2.4);
- ``A-B``, ``A-``, ``-B`` on DA, TM, DT: range matching, bounds inclusive (C.2.2.2.5); a
  partial time (``HH``, ``HHMM``) covers its whole hour or minute; with
  ``combined_datetime`` a date and a time key form one datetime range;
- PN: matched against the whole value and against each component group (so ``Yamada^Tarou``
  and ``山田^太郎`` both find ``Yamada^Tarou=山田^太郎=やまだ^たろう``); with ``fuzzy``
  case-insensitively and with an implied trailing ``*`` (C.2.2.2.1.1 leaves fuzzy semantics
  to the implementation);
- numbers (IS, DS, FL, FD, US, ...): numeric equality, so ``2`` matches ``2.0``;
- a sequence given as ``[{item keys}]`` (item keys may hold nested sequences the same way):
  sequence matching (C.2.2.2.6), true when one item
  matches every non-universal item key;
- anything else: single value matching, exact and case-sensitive (C.2.2.2.1).

One module per job, each using only those above it in this list:

- :mod:`.values`: what a query value means (lists, ranges, dates, times, wildcards);
- :mod:`.model`: the information model on the index tables, attribute resolution;
- :mod:`.conditions`: one key's values as an SQL condition, per VR;
- :mod:`.sql`: the whole query (:func:`compile_find`, :func:`compile_locations`);
- :mod:`.results`: result rows to dicts of DICOM text (:func:`finish`).

:class:`duckpacs.index.Index` runs what this package compiles; the names below are what it
uses.
"""

from duckpacs.index.query.conditions import Cond
from duckpacs.index.query.results import finish
from duckpacs.index.query.sql import (
    FindPlan,
    compile_condition,
    compile_find,
    compile_locations,
    scope_sql,
)

__all__ = [
    "Cond",
    "FindPlan",
    "compile_condition",
    "compile_find",
    "compile_locations",
    "finish",
    "scope_sql",
]

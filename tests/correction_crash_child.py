"""Child of tests/test_corrections.py: opens the archive at argv[1], corrects study argv[2]
and dies (``os._exit``, no cleanup: what SIGKILL leaves) at the point argv[3] names:

- ``after-line``: the correction's journal line written, no version stored yet;
- ``before-index``: every version stored, the index not yet pointed at them;
- ``after-index``: the index pointed at them, the ``done`` line not written.

Fault injection at a chosen point makes each window of the crash reproducible; the random
kills of ``duckpacs serve`` are in tests/test_corrections_serve.py."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from duckpacs.archive import corrections
from duckpacs.archive.facade import Archive


def _die(*_args: Any, **_kwargs: Any) -> Any:
    os._exit(9)


def main() -> None:
    data, study, point = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    if point == "after-line":
        corrections._write_versions = _die  # type: ignore[assignment]
    elif point == "before-index":
        corrections._index_versions = _die  # type: ignore[assignment]
    else:
        index_versions = corrections._index_versions

        def index_then_die(*args: Any) -> Any:
            index_versions(*args)
            os._exit(9)

        corrections._index_versions = index_then_die  # type: ignore[assignment]
    archive = Archive.open(data)
    changes = {"PatientName": "Kill^Test", "PatientID": "KILL-1"}
    archive.correct("study", {"StudyInstanceUID": study}, changes, user="t", source="t")
    os._exit(3)  # not reached: each point dies before


if __name__ == "__main__":
    main()

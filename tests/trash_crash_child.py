"""Child of tests/test_trash_crash.py: deletes and restores studies of the archive at
argv[1] in a loop, until the parent SIGKILLs it at a random moment."""

from __future__ import annotations

import random
import sys
from pathlib import Path

from duckpacs.archive.facade import Archive


def main() -> None:
    data, seed = Path(sys.argv[1]), int(sys.argv[2])
    rnd = random.Random(seed)
    with Archive.open(data) as archive:
        studies = sorted(r["StudyInstanceUID"] for r in archive.find("study", {}, []))
        studies += [b["studies"][0] for b in archive.trash_list()]
        print("ready", flush=True)
        while True:
            study = rnd.choice(studies)
            active = [b for b in archive.trash_list() if b["studies"] == [study]]
            if active:
                archive.restore(active[0]["batch"], user="crash", source="test")
            else:
                archive.discard("study", {"StudyInstanceUID": study}, user="crash", source="t")


if __name__ == "__main__":
    main()

"""The archive's door (Archive over the Rust writer): refusal while a storage limit holds,
deletion that survives a crash between the store and the index, one copy per UID however
many senders race."""

from __future__ import annotations

import threading
from pathlib import Path

from pydicom.data import get_testdata_file

from duckpacs.archive.facade import Archive
from duckpacs.archive.types import Outcome
from duckpacs.dicom import status

CT = Path(str(get_testdata_file("CT_small.dcm"))).read_bytes()


def test_a_refusal_holds_until_lifted(tmp_path: Path) -> None:
    with Archive.open(tmp_path) as archive:
        archive.refuse("archive.max_bytes reached")
        result = archive.store(CT)
        assert result.outcome is Outcome.REJECTED and result.status == status.OUT_OF_RESOURCES
        assert "max_bytes" in result.reason
        archive.refuse(None)
        assert archive.store(CT).outcome is Outcome.STORED


KILLED_MID_DELETE = """
import os, sys
from pathlib import Path
from duckpacs.archive.facade import Archive
archive = Archive.open(Path(sys.argv[1]))
uid = archive.store(Path(sys.argv[2]).read_bytes()).sop_instance_uid
archive.flush()
ref = archive.lookup(uid)
archive.store_backend.delete(ref.location, hold=True)  # the tombstone is durable...
os._exit(9)  # ...and the process dies before the index row is removed
"""


def test_a_deletion_reaches_the_index_even_if_killed_in_between(tmp_path: Path) -> None:
    import subprocess
    import sys

    with Archive.open(tmp_path / "a") as archive:
        uid = archive.store(CT).sop_instance_uid
        ref = archive.lookup(uid)
        assert ref is not None
        assert archive.delete([ref]) == 1
        assert archive.lookup(uid) is None
    ct = tmp_path / "ct.dcm"
    ct.write_bytes(CT)
    child = subprocess.run(
        [sys.executable, "-c", KILLED_MID_DELETE, str(tmp_path / "b"), str(ct)], check=False
    )
    assert child.returncode == 9
    with Archive.open(tmp_path / "b") as archive:  # the catch-up applies the tombstone
        assert archive.caught_up.removed == 1
        assert archive.lookup(uid) is None
        assert archive.store_backend.stats()["instances"] == 0


def test_racing_senders_of_the_same_instances_store_one_copy(tmp_path: Path) -> None:
    from pydicom import dcmread
    from pydicom.filebase import DicomBytesIO

    base = dcmread(get_testdata_file("CT_small.dcm"))
    copies = []
    for i in range(100):
        base.SOPInstanceUID = base.file_meta.MediaStorageSOPInstanceUID = f"1.2.826.0.1.9.{i}"
        out = DicomBytesIO()
        base.save_as(out, enforce_file_format=True)
        copies.append(out.getvalue())
    with Archive.open(tmp_path) as archive:
        results: list[Outcome] = []
        lock = threading.Lock()

        def send() -> None:
            for data in copies:
                r = archive.store(data)
                with lock:
                    results.append(r.outcome)

        for _round in range(5):
            threads = [threading.Thread(target=send) for _ in range(4)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
        assert results.count(Outcome.STORED) == 100
        assert results.count(Outcome.DUPLICATE_IDENTICAL) == 100 * 4 * 5 - 100
        archive.flush()
        assert archive.store_backend.stats()["instances"] == 100
        assert archive.index.stats()["instances"] == 100

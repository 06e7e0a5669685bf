"""Corruption (issue 4: "Corruption"): flip every single byte of a small pack in turn.

Each flip must be reported by ``verify`` and must make the read of the record holding that
byte fail with an IntegrityError / StorageError (never return wrong bytes).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from duckpacs._core import Store
from duckpacs.errors import StorageError
from tests.store_helpers import pydicom_files, read_original


def test_every_byte_flip_is_detected(tmp_path: Path) -> None:
    smallest = sorted(pydicom_files(), key=lambda p: p.stat().st_size)[:3]
    originals = [read_original(p) for p in smallest]
    with Store(tmp_path, writer_id=1) as store:
        locs = store.put_many(originals)
        tomb = store.delete(locs[0])
    (pack,) = (tmp_path / "packs").glob("*.dpk")
    data = bytearray(pack.read_bytes())
    assert len(data) < 8000, "keep this test small"
    records = [*zip(locs, originals, strict=True), (tomb, None)]
    for i in range(len(data)):
        data[i] ^= 0x40
        pack.write_bytes(data)
        with Store(tmp_path) as store:
            assert store.verify(deep=True)["damaged"], f"verify missed a flip at byte {i}"
            for loc, original in records:
                inside = loc[1] <= i < loc[1] + loc[2] or i < 32  # 32: the pack header
                if not inside:
                    continue
                with pytest.raises(StorageError):
                    if original is None:
                        store.meta(loc)
                    else:
                        store.get(loc)
        data[i] ^= 0x40
    pack.write_bytes(data)
    with Store(tmp_path) as store:
        assert store.verify(deep=True)["damaged"] == []
        assert [store.get(loc) for loc in locs[1:]] == originals[1:]

"""Child process of the densify crash tests: stores instances in the arrival encoding and
densifies them, over and over, until it is killed.

Usage: ``python -m tests.densify_crash_child MODE DATA ACK_FILE FIRST``. MODE ``store``
works on the store ``DATA`` directly; MODE ``archive`` opens the archive at ``DATA`` and
lets the index follow every move, as ``duckpacs serve``'s densifier does. Each round
stores a batch of new instances (numbered from FIRST), appends ``index`` lines to ACK_FILE
once they are durable, then densifies with a small budget until nothing is left, so a kill
lands in any phase: mid-record, between steps, at a pack's commit, before the index
follows.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian

from tests.synthetic import uid

BATCH = 12


def instance(i: int) -> bytes:
    """Instance ``i``: one 256x256 16-bit frame (128 KiB, so it arrives cheap), its own
    noise; two frames for every third one."""
    rng = np.random.default_rng(i)
    frames = 2 if i % 3 == 0 else 1
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = sop_uid(i)
    ds.StudyInstanceUID = uid("densify-study")
    ds.SeriesInstanceUID = uid("densify-series", i // 40)
    ds.PatientID, ds.Modality = "DENSIFY", "CT"
    ds.NumberOfFrames = frames
    ds.Rows = ds.Columns = 256
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    y, x = np.mgrid[0:256, 0:256]
    img = (x * 3 + y * 2 + 400 + rng.normal(0, 9, (frames, 256, 256))).clip(0, 4095)
    ds.PixelData = img.astype("<u2").tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def sop_uid(i: int) -> str:
    return uid("densify-sop", i)


def main() -> None:
    mode, data, ack_file, first = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
    acks = open(ack_file, "a", encoding="ascii")  # noqa: SIM115 - lives until we are killed
    if mode == "archive":
        from duckpacs.archive.facade import Archive

        archive = Archive.open(data)
        store = archive.store_backend

        def put(batch: list[bytes]) -> None:
            results = archive.store_many(batch)
            assert all(r.status == 0 for r in results), results

        def relocate(moved: list) -> None:
            archive.relocate(moved)
    else:
        from duckpacs._core import Store

        store = Store(data, writer_id=1, pack_size=2 << 20)

        def put(batch: list[bytes]) -> None:
            store.put_many(batch)

        def relocate(moved: list) -> None:
            pass

    print("ready", flush=True)
    i = first
    while True:
        put([instance(k) for k in range(i, i + BATCH)])
        acks.write("".join(f"{k}\n" for k in range(i, i + BATCH)))
        acks.flush()
        i += BATCH
        while True:
            step = store.densify_step(budget=48 << 10)
            relocate(step["moved"])
            store.settle(step["settle"])
            if step["done"]:
                break


if __name__ == "__main__":
    main()

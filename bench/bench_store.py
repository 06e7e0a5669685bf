"""Storage benchmark (issue 4): our store beside raw files, Orthanc-style zlib-6 and JPEG-LS.

Side by side in one run, on the same bytes:

- whole-instance stored size: raw, every file zlib-6 compressed (what Orthanc's
  StorageCompression does), our store (packs on disk, dictionaries included);
- pixel data only: per-frame JPEG-LS (CharLS via ``imagecodecs``) against our pixel chunks;
- encode MB/s and frame decode MB/s (zlib decodes whole files, as Orthanc must);
- store throughput on 2 threads for synthetic 512x512 CT slices.

Targets (issue 4): whole-instance ratio on the Toshiba series >= 8x; pixel ratio >= 95 % of
JPEG-LS's on native CT/MR; frame decode >= 3x faster than JPEG-LS; store >= 300 MB/s for CT.

Usage: ``python bench/bench_store.py [--limit N] [--ct-slices N]``. Needs ``imagecodecs``
(in the dev extras). Without the shared corpus (tests/corpus.py says where) only the synthetic
CT part runs.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.corpus import SHARED_CORPUS as CORPUS  # noqa: E402

from duckpacs._core import Store  # noqa: E402

MB = 1e6


@dataclass
class Row:
    name: str
    files: int = 0
    raw: int = 0
    zlib: int = 0
    ours: int = 0
    pixel_raw: int = 0
    jls: int = 0
    ours_pixel: int = 0
    t_zlib_enc: float = 0.0
    t_zlib_dec: float = 0.0
    t_jls_enc: float = 0.0
    t_jls_dec: float = 0.0
    t_ours_enc: float = 0.0
    t_ours_dec: float = 0.0
    frame_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def load_set(folder: Path, limit: int | None) -> list[bytes]:
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.name != "LICENSE")
    if limit:
        paths = paths[:limit]
    out = []
    for p in paths:
        data = p.read_bytes()
        out.append(gzip.decompress(data) if p.suffix == ".gz" else data)
    return out


def native_frames(data: bytes) -> list[np.ndarray]:
    """Native pixel frames of one file, or [] when encapsulated or without pixels."""
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
        ts = ds.file_meta.get("TransferSyntaxUID")
        if "PixelData" not in ds or ts is None or ts.is_compressed or ts.is_deflated:
            return []
        if ds.get("BitsAllocated") not in (8, 16):
            return []
        arr = ds.pixel_array
    except Exception:  # files meant to fail, odd geometries: no JPEG-LS baseline for them
        return []
    if arr.dtype.kind == "i":  # JPEG-LS codes the stored bits, as DICOM does for signed data
        arr = arr.view(np.uint16 if arr.itemsize == 2 else np.uint8)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    return [np.ascontiguousarray(f) for f in arr] if frames > 1 else [arr]


def zlib_side(row: Row, files: list[bytes]) -> None:
    t = time.perf_counter()
    comp = [zlib.compress(b, 6) for b in files]
    row.t_zlib_enc = time.perf_counter() - t
    row.zlib = sum(len(c) for c in comp)
    t = time.perf_counter()
    for c in comp:
        zlib.decompress(c)
    row.t_zlib_dec = time.perf_counter() - t


def jpegls_side(row: Row, files: list[bytes]) -> None:
    import imagecodecs

    frames = [f for b in files for f in native_frames(b)]
    encoded = []
    for f in frames:
        t = time.perf_counter()
        try:
            encoded.append(imagecodecs.jpegls_encode(f))
        except ValueError:  # a geometry CharLS does not take (e.g. some colour layouts)
            continue
        row.t_jls_enc += time.perf_counter() - t
        row.pixel_raw += f.nbytes
    row.jls = sum(len(e) for e in encoded)
    t = time.perf_counter()
    for e in encoded:
        imagecodecs.jpegls_decode(e)
    row.t_jls_dec = time.perf_counter() - t


def pack_bytes(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / "packs").glob("*.dpk"))


def ours_side(row: Row, files: list[bytes], root: Path) -> None:
    with Store(root, writer_id=1) as store:
        t = time.perf_counter()
        locs = []
        for i in range(0, len(files), 64):
            locs.extend(store.put_many(files[i : i + 64]))
        row.t_ours_enc = time.perf_counter() - t
        stats = store.stats()
        row.ours = pack_bytes(root)
        row.ours_pixel = stats["pixel_stored_bytes"]
        if stats["pixel_raw_bytes"] != row.pixel_raw and row.pixel_raw:
            row.notes.append(
                f"our pixel chunks cover {stats['pixel_raw_bytes'] / MB:.1f} MB, "
                f"JPEG-LS frames {row.pixel_raw / MB:.1f} MB"
            )
    with Store(root) as reader:  # a fresh reader: nothing cached
        t = time.perf_counter()
        n = 0
        for loc in locs:
            for i in range(reader.frame_count(loc)):
                n += len(reader.get_frame(loc, i))
        row.t_ours_dec = time.perf_counter() - t
        row.frame_bytes = n


def synth_ct(n: int) -> list[bytes]:
    """512x512 16-bit CT slices: a body ellipse with organs, bone ring and noise."""
    rng = np.random.default_rng(7)
    y, x = np.mgrid[-256:256, -256:256].astype(np.float32)
    body = (x / 200) ** 2 + (y / 150) ** 2 < 1
    ring = ((x / 190) ** 2 + (y / 140) ** 2 > 0.85) & body
    study, series = generate_uid(), generate_uid()
    out = []
    for k in range(n):
        organ = ((x - 40 - k % 20) / 60) ** 2 + ((y + 10) / 45) ** 2 < 1
        img = np.full((512, 512), -1000, np.float32)
        img[body] = 40
        img[organ] = 60 + k % 7
        img[ring] = 700
        img += rng.normal(0, 12, img.shape)
        ds = Dataset()
        ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.PatientID, ds.Modality = "BENCH", "CT"
        ds.InstanceNumber = k + 1
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleIntercept, ds.RescaleSlope = 0, 1
        ds.PixelData = np.clip(img, -1024, 3071).astype("<i2").tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def throughput(files: list[bytes], root: Path, threads: int) -> float:
    """MB/s of durable puts from `threads` threads into one store (group commit)."""
    with Store(root, writer_id=2) as store, ThreadPoolExecutor(threads) as pool:
        t = time.perf_counter()
        list(pool.map(store.put, files))
        return sum(len(b) for b in files) / MB / (time.perf_counter() - t)


def ratio(a: float, b: float) -> str:
    return f"{a / b:6.2f}x" if b else "     -"


def speed(nbytes: float, seconds: float) -> str:
    return f"{nbytes / MB / seconds:7.0f}" if seconds else "      -"


def report(rows: list[Row]) -> None:
    print("\nStored size (whole instances) and pixel data only; ratios are raw / stored.")
    print(
        f"{'set':<22} {'files':>5} {'raw MB':>8} {'zlib-6':>7} {'ours':>7} | "
        f"{'px MB':>7} {'JPEG-LS':>7} {'ours px':>7} {'vs JLS':>7}"
    )
    for r in rows:
        share = (
            f"{100 * (r.pixel_raw / r.ours_pixel) / (r.pixel_raw / r.jls):6.0f}%"
            if (r.ours_pixel and r.jls)
            else "      -"
        )
        print(
            f"{r.name:<22} {r.files:>5} {r.raw / MB:8.1f} {ratio(r.raw, r.zlib)} "
            f"{ratio(r.raw, r.ours)} | {r.pixel_raw / MB:7.1f} {ratio(r.pixel_raw, r.jls)} "
            f"{ratio(r.pixel_raw, r.ours_pixel)} {share}"
        )
    print("\nSpeed, MB/s of original bytes. One core, except 'ours enc': put_many, which lays out")
    print("and encodes on every core and fsyncs. Encode: whole files for zlib and ours, frames")
    print("for JPEG-LS; decode: whole files for zlib, frames for JPEG-LS and ours (get_frame from")
    print("a fresh reader: pack read, checksum, zstd, filter, one call per frame).")
    print(
        f"{'set':<22} {'zlib enc':>8} {'JLS enc':>8} {'ours enc':>8} | "
        f"{'zlib dec':>8} {'JLS dec':>8} {'ours dec':>8} {'ours/JLS':>8}"
    )
    for r in rows:
        dec_ratio = (
            f"{(r.frame_bytes / r.t_ours_dec) / (r.pixel_raw / r.t_jls_dec):7.1f}x"
            if r.t_ours_dec and r.t_jls_dec and r.pixel_raw
            else "       -"
        )
        print(
            f"{r.name:<22} {speed(r.raw, r.t_zlib_enc):>8} {speed(r.pixel_raw, r.t_jls_enc):>8} "
            f"{speed(r.raw, r.t_ours_enc):>8} | {speed(r.raw, r.t_zlib_dec):>8} "
            f"{speed(r.pixel_raw, r.t_jls_dec):>8} {speed(r.frame_bytes, r.t_ours_dec):>8} "
            f"{dec_ratio}"
        )
    for r in rows:
        for note in r.notes:
            print(f"note ({r.name}): {note}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="files per corpus set")
    parser.add_argument("--ct-slices", type=int, default=160, help="synthetic CT slices")
    args = parser.parse_args()
    sets: list[tuple[str, list[bytes]]] = []
    for name, folder in [
        ("mr_toshiba_dti", "mr_toshiba_dti"),
        ("mr_philips (gunzipped)", "mr_philips_classic_gz"),
        ("pydicom-data", "pydicom-data"),
    ]:
        if (CORPUS / folder).is_dir():
            sets.append((name, load_set(CORPUS / folder, args.limit)))
        else:
            print(f"skipping {name}: {CORPUS / folder} is absent", file=sys.stderr)
    ct = synth_ct(args.ct_slices)
    sets.append(("synthetic CT 512x512", ct))
    rows = []
    with tempfile.TemporaryDirectory(dir=os.environ.get("BENCH_TMP")) as tmp:
        for i, (name, files) in enumerate(sets):
            print(f"measuring {name} ({len(files)} files)...", file=sys.stderr)
            row = Row(name, files=len(files), raw=sum(len(b) for b in files))
            zlib_side(row, files)
            jpegls_side(row, files)
            ours_side(row, files, Path(tmp) / f"set{i}")
            rows.append(row)
        report(rows)
        mbs = throughput(ct, Path(tmp) / "throughput", threads=2)
        one = throughput(ct, Path(tmp) / "throughput1", threads=1)
    print(
        f"\nStore throughput, synthetic 512x512 CT, durable puts: {mbs:.0f} MB/s on 2 threads, "
        f"{one:.0f} MB/s on 1 (target >= 300 MB/s on 2 cores)."
    )
    toshiba = next((r for r in rows if r.name == "mr_toshiba_dti"), None)
    if toshiba and toshiba.ours:
        print(
            f"Toshiba whole-instance ratio: ours {toshiba.raw / toshiba.ours:.1f}x, "
            f"zlib-6 {toshiba.raw / toshiba.zlib:.1f}x (target >= 8x)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

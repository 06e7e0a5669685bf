"""Storage benchmark (issues 4 and 13): our store beside raw files, Orthanc-style zlib-6 and
JPEG-LS; the arrival encoding, densifying, and densifying beside a running ingest.

Side by side in one run, on the same bytes:

- whole-instance stored size: raw, every file zlib-6 compressed (what Orthanc's
  StorageCompression does), our store as instances arrive (large frames in the arrival
  encoding) and at rest (after densifying; packs on disk, dictionaries included);
- pixel data only: per-frame JPEG-LS (CharLS via ``imagecodecs``) against our pixel chunks
  at rest;
- encode MB/s: arrival writes, and dense-at-arrival writes (what the store did before issue
  13), densify MB/s, frame decode MB/s (zlib decodes whole files, as Orthanc must);
- the arrival encodings measured (``--choices``): write MB/s and ratio of each on the MR
  series and the synthetic CT;
- durable store throughput on 2 threads for synthetic 512x512 CT slices, arrival and dense;
- an ingest of CT slices through the archive alone, then with ``serve``'s densifier running
  (with a backlog to densify), continuous and in bursts: the share it takes off the ingest;
- the time an idle archive (``serve``'s densifier, default settings) takes to densify the
  CT set.

Targets (issues 4 and 13): whole-instance ratio on the Toshiba series >= 8x; pixel ratio at
rest >= 95 % of JPEG-LS's on native CT/MR; frame decode >= 3x faster than JPEG-LS; store
>= 300 MB/s for CT; densifying takes at most 10 % off an ingest running at the same time.

Usage: ``python bench/bench_store.py [--limit N] [--ct-slices N] [--no-choices]``. Needs
``imagecodecs`` (in the dev extras). Without the shared corpus (tests/corpus.py says where)
only the synthetic CT part runs.
"""

from __future__ import annotations

import argparse
import gzip
import io
import os
import shutil
import sys
import tempfile
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
    arrival: int = 0  # packs on disk as the instances arrived
    t_dense_enc: float = 0.0  # dense at arrival: the store before issue 13
    dense: int = 0
    t_densify: float = 0.0
    densified: int = 0  # instances moved by densifying
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


def densify_all(store: Store, threads: int = 2) -> int:
    """Densifies everything, a victim pack per step; returns the instances moved."""
    moved = 0
    while True:
        step = store.densify_step(budget=1 << 62, threads=threads)
        moved += len(step["moved"])
        store.settle(step["settle"])
        if step["done"] or not (step["bytes_in"] or step["scanned"] or step["packs"]):
            return moved


def put_all(store: Store, files: list[bytes]) -> list[tuple[int, int, int]]:
    locs = []
    for i in range(0, len(files), 64):
        locs.extend(store.put_many(files[i : i + 64]))
    return locs


def ours_side(row: Row, files: list[bytes], root: Path) -> None:
    with Store(root / "dense", writer_id=1, arrival="dense") as store:
        t = time.perf_counter()
        put_all(store, files)
        row.t_dense_enc = time.perf_counter() - t
    row.dense = pack_bytes(root / "dense")
    with Store(root / "ours", writer_id=1) as store:
        t = time.perf_counter()
        put_all(store, files)
        row.t_ours_enc = time.perf_counter() - t
        row.arrival = pack_bytes(root / "ours")
        t = time.perf_counter()
        row.densified = densify_all(store)
        row.t_densify = time.perf_counter() - t
        stats = store.stats()
        row.ours = pack_bytes(root / "ours")
        row.ours_pixel = stats["pixel_stored_bytes"]
        if stats["pixel_raw_bytes"] != row.pixel_raw and row.pixel_raw:
            row.notes.append(
                f"our pixel chunks cover {stats['pixel_raw_bytes'] / MB:.1f} MB, "
                f"JPEG-LS frames {row.pixel_raw / MB:.1f} MB"
            )
    with Store(root / "ours") as reader:  # a fresh reader: nothing cached
        locs = [tuple(e["location"]) for e in reader.scan(headers=False)]  # where they are now
        t = time.perf_counter()
        n = 0
        for loc in locs:
            for i in range(reader.frame_count(loc)):
                n += len(reader.get_frame(loc, i))
        row.t_ours_dec = time.perf_counter() - t
        row.frame_bytes = n


def arrival_choices(sets: list[tuple[str, list[bytes]]], root: Path) -> None:
    """Write MB/s (put_many, best of 2) and ratios of each arrival encoding."""
    print("\nArrival encodings (large frames as they arrive; small ones are dense anyway):")
    print(f"{'set':<22} {'encoding':<8} {'write MB/s':>10} {'ratio':>7} {'pixels':>7}")
    for name, files in sets:
        raw = sum(len(b) for b in files)
        for arrival in ("dense", "raw", "zstd:1", "zstd:-1", "zstd:-3"):
            best = float("inf")
            for attempt in range(2):
                where = root / f"choice-{name[:8]}-{arrival}-{attempt}"
                with Store(where, writer_id=1, arrival=arrival) as store:
                    t = time.perf_counter()
                    put_all(store, files)
                    best = min(best, time.perf_counter() - t)
                    stats = store.stats()
            px = ratio(stats["pixel_raw_bytes"], stats["pixel_stored_bytes"])
            print(
                f"{name:<22} {arrival:<8} {speed(raw, best):>10} "
                f"{ratio(raw, pack_bytes(where))} {px}"
            )


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


def throughput(files: list[bytes], root: Path, threads: int, arrival: str | None = None) -> float:
    """MB/s of durable puts from `threads` threads into one store (group commit)."""
    with Store(root, writer_id=2, arrival=arrival) as store, ThreadPoolExecutor(threads) as pool:
        t = time.perf_counter()
        list(pool.map(store.put, files))
        return sum(len(b) for b in files) / MB / (time.perf_counter() - t)


def _reuid(files: list[bytes], tag: str) -> list[bytes]:
    """The same CT slices under new SOP Instance UIDs (a second arrival of the set)."""
    out = []
    for b in files:
        ds = pydicom.dcmread(io.BytesIO(b))
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid(
            entropy_srcs=[tag, ds.SOPInstanceUID]
        )
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def _ingest(archive: Any, files: list[bytes], bursts: int, pause: float) -> float:
    """Seconds spent storing `files` one by one from 2 threads (like 2 associations), in
    `bursts` bursts separated by `pause` seconds (pauses not counted)."""
    spent = 0.0
    per = -(-len(files) // bursts)
    with ThreadPoolExecutor(2) as pool:
        for k in range(bursts):
            part = files[k * per : (k + 1) * per]
            t = time.perf_counter()
            list(pool.map(archive.store, part))
            spent += time.perf_counter() - t
            if k + 1 < bursts:
                time.sleep(pause)
    return spent


def densify_beside_ingest(ct: list[bytes], root: Path, rounds: int = 7) -> None:
    """The ingest alone, then with serve's densifier and a backlog to densify, and with a
    densifier that does not wait for a quiet moment (only its low priority); the three in
    turn, `rounds` times, medians reported."""
    import statistics

    from duckpacs.archive.facade import Archive
    from duckpacs.server.densify import Densifier

    backlog = [b for k in range(3) for b in _reuid(ct, f"backlog{k}")]
    mb = 4 * sum(len(b) for b in ct) / MB
    print(f"\nDensifying beside an ingest ({mb:.0f} MB of CT slices stored one by one from 2")
    print(f"threads through the archive, which holds a backlog of {0.75 * mb:.0f} MB to densify):")
    print("MB/s of the ingest alone, with `serve`'s densifier, and with one that never waits")
    print(f"for a quiet second (medians of {rounds} rounds, the three in turn; the range of the")
    print("rounds in brackets), and the MB the densifier read while the ingest ran.")
    head = f"{'ingest':<22} {'alone':>13} {'serve':>13} {'off':>6} {'MB':>4}"
    print(f"{head} {'no wait':>13} {'off':>6} {'MB':>4}")
    for label, bursts, pause in (("continuous", 1, 0.0), ("3 bursts, 1.5 s apart", 3, 1.5)):
        rates: dict[float | None, list[float]] = {None: [], 1.0: [], 0.0: []}
        busy: dict[float | None, list[float]] = {None: [], 1.0: [], 0.0: []}
        for r in range(rounds):
            for idle in rates:
                where = root / f"beside-{bursts}-{idle}-{r}"
                files = [b for k in range(4) for b in _reuid(ct, f"{bursts}{idle}{r}{k}")]
                with Archive.open(where) as archive:
                    archive.store_many(backlog)  # in the arrival encoding
                    densifier = None if idle is None else Densifier(archive, idle=idle)
                    if densifier is not None:
                        densifier.start()
                        time.sleep(1.5)  # it gets going: the archive was idle
                    before = densifier.bytes_in if densifier else 0
                    spent = _ingest(archive, files, bursts, pause)
                    busy[idle].append(((densifier.bytes_in if densifier else 0) - before) / MB)
                    if densifier is not None:
                        densifier.stop()
                rates[idle].append(mb / spent)
                shutil.rmtree(where)
        med = {k: statistics.median(v) for k, v in rates.items()}
        rng = {k: f"[{min(v):.0f}-{max(v):.0f}]" for k, v in rates.items()}
        mbs = {k: statistics.median(v) for k, v in busy.items()}
        cells = [f"{med[None]:>4.0f} {rng[None]:>8}"]
        for k in (1.0, 0.0):
            off = 100 * (1 - med[k] / med[None])
            cells.append(f"{med[k]:>4.0f} {rng[k]:>8} {off:>5.1f}% {mbs[k]:>4.0f}")
        print(f"{label:<22} " + " ".join(cells))
    print("(target: at most 10 % off)")


def idle_densify(ct: list[bytes], root: Path) -> None:
    """How long an idle archive takes to densify the CT set with serve's settings."""
    from duckpacs.archive.facade import Archive
    from duckpacs.server.densify import Densifier

    with Archive.open(root / "idle") as archive:
        archive.store_many(ct)
        store = archive.store_backend
        before = store.stats()["arrival_stored_bytes"]
        densifier = Densifier(archive)
        t = time.perf_counter()
        densifier.start()
        while store.stats()["arrival_instances"]:
            time.sleep(0.02)
        seconds = time.perf_counter() - t
        densifier.stop()
    mb = sum(len(b) for b in ct) / MB
    work = seconds - densifier.idle
    print(
        f"\nIdle archive densifying the CT set ({mb:.0f} MB, {before / MB:.0f} MB in the arrival "
        f"encoding) with serve's densifier (1 thread at nice 19, once {densifier.idle:.0f} s "
        f"passed without arrivals): done {seconds:.1f} s after the last arrival, {work:.1f} s "
        f"of work ({mb / work:.0f} MB/s)."
    )


def ratio(a: float, b: float) -> str:
    return f"{a / b:6.2f}x" if b else "     -"


def speed(nbytes: float, seconds: float) -> str:
    return f"{nbytes / MB / seconds:7.0f}" if seconds else "      -"


def report(rows: list[Row]) -> None:
    print("\nStored size (whole instances) and pixel data only; ratios are raw / stored.")
    print("'arrival': packs as the instances arrived; 'at rest': after densifying.")
    print(
        f"{'set':<22} {'files':>5} {'raw MB':>8} {'zlib-6':>7} {'arrival':>7} {'at rest':>7} | "
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
            f"{ratio(r.raw, r.arrival)} {ratio(r.raw, r.ours)} | {r.pixel_raw / MB:7.1f} "
            f"{ratio(r.pixel_raw, r.jls)} {ratio(r.pixel_raw, r.ours_pixel)} {share}"
        )
    print("\nSpeed, MB/s of original bytes. One core, except ours: 'arrival' and 'dense' are")
    print("put_many (lays out and encodes on every core, fsyncs), 'dense' encoding everything at")
    print("once as the store did before issue 13; 'densify' rewrites the arrival packs on 2")
    print("threads. Encode: whole files for zlib and ours, frames for JPEG-LS; decode: whole")
    print("files for zlib, frames for JPEG-LS and ours (get_frame from a fresh reader at rest).")
    print(
        f"{'set':<22} {'zlib enc':>8} {'JLS enc':>8} {'arrival':>8} {'dense':>8} {'densify':>8}"
        f" | {'zlib dec':>8} {'JLS dec':>8} {'ours dec':>8} {'ours/JLS':>8}"
    )
    for r in rows:
        # Nothing in the arrival encoding (small frames only): nothing to densify.
        densify_speed = speed(r.raw, r.t_densify) if r.densified else "-"
        dec_ratio = (
            f"{(r.frame_bytes / r.t_ours_dec) / (r.pixel_raw / r.t_jls_dec):7.1f}x"
            if r.t_ours_dec and r.t_jls_dec and r.pixel_raw
            else "       -"
        )
        print(
            f"{r.name:<22} {speed(r.raw, r.t_zlib_enc):>8} {speed(r.pixel_raw, r.t_jls_enc):>8} "
            f"{speed(r.raw, r.t_ours_enc):>8} {speed(r.raw, r.t_dense_enc):>8} "
            f"{densify_speed:>8} | {speed(r.raw, r.t_zlib_dec):>8} "
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
    parser.add_argument(
        "--no-choices", action="store_true", help="skip the table of arrival encodings"
    )
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
        if not args.no_choices:
            arrival_choices([s for s in sets if s[0] != "pydicom-data"], Path(tmp))
        mbs = throughput(ct, Path(tmp) / "throughput", threads=2)
        one = throughput(ct, Path(tmp) / "throughput1", threads=1)
        dense = throughput(ct, Path(tmp) / "throughput-dense", threads=2, arrival="dense")
        print(
            f"\nStore throughput, synthetic 512x512 CT, durable puts: {mbs:.0f} MB/s on 2 "
            f"threads, {one:.0f} MB/s on 1; dense at arrival (before issue 13): {dense:.0f} MB/s "
            "on 2 (target >= 300 MB/s on 2 cores)."
        )
        densify_beside_ingest(ct, Path(tmp))
        idle_densify(ct, Path(tmp))
    toshiba = next((r for r in rows if r.name == "mr_toshiba_dti"), None)
    if toshiba and toshiba.ours:
        print(
            f"Toshiba whole-instance ratio at rest: ours {toshiba.raw / toshiba.ours:.1f}x, "
            f"zlib-6 {toshiba.raw / toshiba.zlib:.1f}x (target >= 8x)."
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""DIMSE benchmark: duckpacs beside Orthanc (Debian, SQLite, no compression), one run.

Ingest with DCMTK storescu (1 and 4 parallel associations) of the real MR series in
../shared/corpus/mr_toshiba_dti and of synthetic 512x512 CT; then, on the loaded MR archive,
C-GET and C-MOVE of the whole study and an image-level C-FIND asking for a non-key attribute
(EchoTime). Prints instances/s, MB/s, seconds and peak RSS for both, and the ratio (above 1
means duckpacs is better). Every DCMTK tool and Orthanc run with TCP_NODELAY=1.

The MR study is the Toshiba series copied ``--mr-copies`` times under new UIDs (4 copies:
2,080 instances in one study, the size of the study measured in the issue). Targets (issue
12): ingest at least 1.5x Orthanc's instances/s (MR, 1 and 4 associations) and MB/s (CT);
C-GET and C-MOVE of the study at least 2x faster; the image-level C-FIND at least 5x faster;
peak RSS of duckpacs at most 150 MB.

    python bench/bench_dimse.py [--ct 200] [--mr-copies 4]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.corpus import SHARED_CORPUS  # noqa: E402
from tests.helpers import free_port  # noqa: E402
from tests.interop.orthanc import orthanc_binary, peak_rss_kib, run_orthanc  # noqa: E402

MR_DIR = SHARED_CORPUS / "mr_toshiba_dti"
SCU = "BENCHSCU"
ENV = {**os.environ, "TCP_NODELAY": "1"}


def dcmtk(name: str) -> str | None:
    """DCMTK's tool, not pynetdicom's console script of the same name in the venv."""
    venv_bin = (Path(sys.prefix) / "bin").resolve()
    dirs = [d for d in os.environ.get("PATH", "").split(os.pathsep) if d]
    return shutil.which(
        name, path=os.pathsep.join(d for d in dirs if Path(d).resolve() != venv_bin)
    )


TOOLS: dict[str, str] = {}


def tool(name: str) -> str:
    return TOOLS[name]


def synth_ct(folder: Path, count: int) -> list[Path]:
    """``count`` CT slices, 512x512x16 bit, one series: smooth anatomy-like ramps plus noise."""
    import numpy as np
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    yy, xx = np.mgrid[0:512, 0:512]
    body = ((xx - 256) ** 2 + (yy - 256) ** 2 < 200**2) * 1000
    study, series = generate_uid(), generate_uid()
    files = []
    for i in range(count):
        pixels = (body + 40 * np.sin((xx + i) / 30.0) + rng.normal(0, 20, (512, 512))).clip(0)
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        uid = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, uid
        ds.PatientName, ds.PatientID, ds.Modality = "Bench^CT", "BENCHCT", "CT"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyDate, ds.SeriesNumber, ds.InstanceNumber = "20260101", 1, i + 1
        ds.Rows = ds.Columns = 512
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = pixels.astype(np.uint16).tobytes()
        path = folder / f"ct{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files


@contextmanager
def run_duckpacs(data: Path, dest_port: int) -> Iterator[tuple[int, int]]:
    """``duckpacs serve`` (product path) on free ports; yields (DIMSE port, pid)."""
    data.mkdir(parents=True, exist_ok=True)
    (data / "duckpacs.toml").write_text(
        '[archive]\nlog_level = "WARNING"\n'
        '[dimse]\naccept_any = true\nbind = "127.0.0.1"\n'
        f'[peers.bench]\nae_title = "{SCU}"\nhost = "127.0.0.1"\nport = {dest_port}\n'
    )
    port, http = free_port(), free_port()
    log = (data / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "duckpacs.cli.main", "serve", "--data", str(data),
         "--port", str(port), "--http-port", str(http), "--log-level", "INFO"],
        stdout=log, stderr=subprocess.STDOUT, env=ENV,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 90
        while "HTTP listening" not in (data / "serve.log").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("duckpacs did not start:\n" + (data / "serve.log").read_text())
            time.sleep(0.1)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def tree(pid: int) -> list[int]:
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            pids += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return pids


def storescu(port: int, aet: str, files: list[Path], associations: int) -> float:
    chunks = [files[i::associations] for i in range(associations)]
    started = time.perf_counter()
    procs = [
        subprocess.Popen(
            [tool("storescu"), "-aet", SCU, "-aec", aet, "127.0.0.1", str(port), *map(str, chunk)],
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        for chunk in chunks
    ]
    for p in procs:
        _out, err = p.communicate()
        if p.returncode != 0:
            raise RuntimeError(f"storescu failed: {err.decode(errors='replace')[-500:]}")
    return time.perf_counter() - started


def timed(cmd: list[str]) -> float:
    started = time.perf_counter()
    result = subprocess.run(cmd, env=ENV, capture_output=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"{cmd[0]} failed: {result.stderr.decode(errors='replace')[-500:]}")
    return time.perf_counter() - started


def study_uid(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def retrieval(port: int, aet: str, study: str, work: Path, dest_port: int) -> dict[str, float]:
    out: dict[str, float] = {}
    got = work / "get"
    shutil.rmtree(got, ignore_errors=True)
    got.mkdir(parents=True)
    q = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}"]
    out["C-GET study (s)"] = timed(
        [
            tool("getscu"),
            "-aet",
            SCU,
            "-aec",
            aet,
            "-S",
            "+B",
            "-od",
            str(got),
            *q,
            "127.0.0.1",
            str(port),
        ]
    )
    out["C-GET files"] = float(len(list(got.iterdir())))
    moved = work / "moved"
    shutil.rmtree(moved, ignore_errors=True)
    moved.mkdir(parents=True)
    scp = subprocess.Popen(
        [tool("storescp"), "-aet", SCU, "+B", "-od", str(moved), "--accept-all", str(dest_port)],
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        time.sleep(0.3)
        out["C-MOVE study (s)"] = timed(
            [
                tool("movescu"),
                "-aet",
                SCU,
                "-aec",
                aet,
                "-aem",
                SCU,
                "-S",
                *q,
                "127.0.0.1",
                str(port),
            ]
        )
    finally:
        scp.terminate()
        scp.wait(10)
    out["C-MOVE files"] = float(len(list(moved.iterdir())))
    found = work / "found"
    shutil.rmtree(found, ignore_errors=True)
    found.mkdir(parents=True)
    out["C-FIND IMAGE, EchoTime (s)"] = timed(
        [tool("findscu"), "-aet", SCU, "-aec", aet, "-S", "-X", "-od", str(found),
         "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={study}",
         "-k", "SeriesInstanceUID", "-k", "SOPInstanceUID", "-k", "EchoTime",
         "127.0.0.1", str(port)]
    )  # fmt: skip
    out["C-FIND matches"] = float(len(list(found.iterdir())))
    return out


def mr_study(folder: Path, copies: int) -> list[Path]:
    """The Toshiba series ``copies`` times, each copy a series of its own in one study."""
    from pydicom import dcmread
    from pydicom.uid import generate_uid

    sources = sorted(MR_DIR.glob("*.dcm"))
    if copies <= 1:
        return sources
    folder.mkdir(parents=True, exist_ok=True)
    study = generate_uid(entropy_srcs=["bench-dimse-mr-study"])
    files = []
    for c in range(copies):
        series = generate_uid(entropy_srcs=[f"bench-dimse-mr-series-{c}"])
        for n, path in enumerate(sources):
            ds = dcmread(path)
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            uid = generate_uid(entropy_srcs=[f"bench-dimse-mr-{c}-{n}"])
            ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
            out = folder / f"mr{c}-{n:04d}.dcm"
            ds.save_as(out, enforce_file_format=True)
            files.append(out)
    return files


def scenario(
    name: str, files: list[Path], associations: int, work: Path, retrieve: bool
) -> list[tuple[str, float, float, bool]]:
    """Rows of (metric, duckpacs, orthanc, higher_is_better)."""
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    dest_port = free_port()
    rows: list[tuple[str, float, float, bool]] = []
    label = f"{name}, {associations} assoc"
    with (
        run_duckpacs(work / "duckpacs", dest_port) as (dport, dpid),
        run_orthanc(work / "orthanc", {"bench": (SCU, "127.0.0.1", dest_port)}) as orthanc,
    ):
        d = storescu(dport, "DUCKPACS", files, associations)
        o = storescu(orthanc.dicom_port, orthanc.aet, files, associations)
        rows.append((f"{label}: instances/s", len(files) / d, len(files) / o, True))
        rows.append((f"{label}: MB/s", size_mb / d, size_mb / o, True))
        if retrieve:
            study = study_uid(files[0])
            dr = retrieval(dport, "DUCKPACS", study, work / "d", dest_port)
            orr = retrieval(orthanc.dicom_port, orthanc.aet, study, work / "o", dest_port)
            for key in dr:
                rows.append((key, dr[key], orr[key], "files" in key or "matches" in key))
        rows.append(
            (f"{label}: peak RSS (MiB)", peak_rss_kib(tree(dpid)) / 1024,
             peak_rss_kib([orthanc.process.pid]) / 1024, False)
        )  # fmt: skip
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=int, default=200, help="synthetic CT instances (200)")
    parser.add_argument(
        "--mr-copies", type=int, default=4, help="copies of the MR series in the study (4)"
    )
    args = parser.parse_args()
    for name in ("storescu", "getscu", "movescu", "findscu", "storescp"):
        path = dcmtk(name)
        if path is None:
            print(f"skipped: DCMTK's {name} not installed (Debian package dcmtk)")
            return 0
        TOOLS[name] = path
    if orthanc_binary() is None:
        print("skipped: Orthanc not installed (Debian package orthanc)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-dimse-"))
    try:
        corpora: list[tuple[str, list[Path], bool]] = []
        if MR_DIR.is_dir():
            corpora.append(("MR study", mr_study(work / "mr", args.mr_copies), True))
        else:
            print(f"note: {MR_DIR} absent; MR rows skipped")
        corpora.append(("CT 512x512", synth_ct(work / "ct", args.ct), False))
        rows: list[tuple[str, float, float, bool]] = []
        for name, files, retrieve in corpora:
            for associations in (1, 4):
                run_dir = work / f"{name[:2]}{associations}"
                rows += scenario(name, files, associations, run_dir, retrieve and associations == 4)
                shutil.rmtree(run_dir, ignore_errors=True)
        print(f"\n{'metric':<40} {'duckpacs':>10} {'orthanc':>10} {'ratio':>7}")
        for metric, ours, theirs, higher_better in rows:
            if "files" in metric or "matches" in metric:
                print(f"{metric:<40} {ours:>10.0f} {theirs:>10.0f} {'':>7}")
                continue
            ratio = (ours / theirs if higher_better else theirs / ours) if ours and theirs else 0
            print(f"{metric:<40} {ours:>10.2f} {theirs:>10.2f} {ratio:>6.2f}x")
        print("ratio > 1: duckpacs better (throughput: ours/theirs; time and RSS: theirs/ours)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

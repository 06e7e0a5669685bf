"""DICOM TLS ingest: DCMTK storescu plain and with ``+tls`` (mutual authentication) into
``duckpacs serve`` (plain and TLS listeners of one server) and into Debian's Orthanc (plain,
then restarted with DicomTlsEnabled). One run each, one association; prints instances/s,
MB/s, the server's CPU seconds (user + system, steadier than wall time on a shared machine)
and the TLS/plain ratios. Certificates are made by openssl (tests/tls_support.py).

Data: the real MR series in ../shared/corpus/mr_toshiba_dti (small instances: per-message
cost) and synthetic 512x512 CT (large instances: bulk encryption cost).

    python bench/bench_tls.py [--ct 100]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_dimse import ENV, MR_DIR, SCU, dcmtk, synth_ct  # noqa: E402
from tests.helpers import free_port  # noqa: E402
from tests.interop.orthanc import orthanc_binary, run_orthanc  # noqa: E402
from tests.tls_support import Pki, make_pki  # noqa: E402


@contextmanager
def duckpacs_serve(data: Path, pki: Pki) -> Iterator[tuple[int, int, int]]:
    """``duckpacs serve`` with both listeners; yields (plain port, TLS port, pid)."""
    data.mkdir(parents=True, exist_ok=True)
    port, tls_port, http = free_port(), free_port(), free_port()
    (data / "duckpacs.toml").write_text(
        '[archive]\nlog_level = "WARNING"\n'
        '[dimse]\naccept_any = true\nbind = "127.0.0.1"\n'
        f'tls_port = {tls_port}\ntls_cert = "{pki.server.cert}"\n'
        f'tls_key = "{pki.server.key}"\ntls_ca = "{pki.ca}"\n'
    )
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
        yield port, tls_port, proc.pid
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its threads so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


Run = tuple[float, float]  # (wall seconds, server CPU seconds)


def store(port: int, aet: str, files: list[Path], tls: list[str], pid: int) -> Run:
    storescu = dcmtk("storescu")
    if storescu is None:
        raise RuntimeError("DCMTK's storescu is not installed (Debian package dcmtk)")
    started, cpu = time.perf_counter(), cpu_seconds(pid)
    done = subprocess.run(
        [storescu, *tls, "-aet", SCU, "-aec", aet, "127.0.0.1", str(port),
         *map(str, files)],
        env=ENV, capture_output=True, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"storescu failed: {done.stderr.decode(errors='replace')[-500:]}")
    return time.perf_counter() - started, cpu_seconds(pid) - cpu


def part10_file(path: Path) -> bool:
    with path.open("rb") as f:
        return path.is_file() and f.read(132)[128:] == b"DICM"


def line(name: str, files: list[Path], plain: Run, secure: Run) -> str:
    mb = sum(f.stat().st_size for f in files) / 1e6
    (pw, pc), (sw, sc) = plain, secure
    return (
        f"{name:<22} plain {len(files) / pw:5.0f} inst/s {mb / pw:5.1f} MB/s {pc:5.2f} cpu-s | "
        f"TLS {len(files) / sw:5.0f} inst/s {mb / sw:5.1f} MB/s {sc:5.2f} cpu-s | "
        f"TLS/plain speed {pw / sw:4.2f} cpu {sc / max(pc, 1e-3):4.2f}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ct", type=int, default=100, help="synthetic CT slices (default 100)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-tls-") as tmp:
        work = Path(tmp)
        pki = make_pki(work / "pki")
        tls = ["+tls", str(pki.client.key), str(pki.client.cert), "+cf", str(pki.ca)]
        sets = {"CT 512x512": synth_ct(work / "ct", args.ct)}
        if MR_DIR.is_dir():
            sets["MR (Toshiba)"] = sorted(p for p in MR_DIR.rglob("*") if part10_file(p))
        print(f"{len(sets)} sets; one storescu association each; TCP_NODELAY=1")
        for name, files in sets.items():
            with duckpacs_serve(work / f"duckpacs-{len(name)}-plain", pki) as (port, _tls, pid):
                plain = store(port, "DUCKPACS", files, [], pid)
            with duckpacs_serve(work / f"duckpacs-{len(name)}-tls", pki) as (_port, tls_port, pid):
                secure = store(tls_port, "DUCKPACS", files, tls, pid)
            print(line(f"duckpacs {name}", files, plain, secure))
            if orthanc_binary() is None:
                continue
            with run_orthanc(work / f"orthanc-{len(name)}-plain", {}) as orthanc:
                plain = store(orthanc.dicom_port, orthanc.aet, files, [], orthanc.process.pid)
            options = {
                "DicomTlsEnabled": True,
                "DicomTlsCertificate": str(pki.peer.cert),
                "DicomTlsPrivateKey": str(pki.peer.key),
                "DicomTlsTrustedCertificates": str(pki.ca),
                "DicomTlsRemoteCertificateRequired": True,
            }
            with run_orthanc(work / f"orthanc-{len(name)}-tls", {}, options=options) as orthanc:
                pid = orthanc.process.pid
                secure = store(orthanc.dicom_port, orthanc.aet, files, tls, pid)
            print(line(f"Orthanc {name}", files, plain, secure))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Forwarding benchmark: duckpacs forwarding a study to Orthanc, beside Orthanc forwarding
the same study to the same receiver (its REST ``/modalities/X/store`` job), one run.

The receiver is a third process, an Orthanc (Debian, SQLite, no compression), emptied
between runs. duckpacs holds the study (imported before ``serve`` starts) and forwards it
through its queue: ``POST /api/studies/{uid}/send`` (the web's "send to...", queued and
delivered by the Rust C-STORE SCU), timed until the queue reports every instance sent.
The sending Orthanc holds the same study (stored with storescu) and runs
``POST /modalities/receiver/store`` with ``Synchronous: true``, timed until it returns.
Both send each instance as stored; Orthanc's job uses one association, duckpacs
``routing.associations`` (2 by default) to the one destination. Prints instances/s and MB/s
for both and the ratio (above 1: duckpacs faster). Target (issue 16): at least 1.5x.
Every DCMTK tool and Orthanc run with TCP_NODELAY=1.

The study is the Toshiba MR series of ../shared/corpus copied ``--mr-copies`` times (4:
2,080 instances), or ``--synthetic N`` small MR images when the corpus is absent.

    python bench/bench_route.py [--mr-copies 4] [--synthetic 2000] [--repeat 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_dimse import ENV, MR_DIR, dcmtk, mr_study, storescu, study_uid  # noqa: E402
from bench.bench_dimse import TOOLS as DIMSE_TOOLS  # noqa: E402
from tests.crash_support import write_study  # noqa: E402
from tests.helpers import free_port  # noqa: E402
from tests.interop.orthanc import Orthanc, orthanc_binary, run_orthanc  # noqa: E402

from duckpacs.config import OPTIONS_BY_KEY  # noqa: E402


def http(url: str, body: object = None, method: str | None = None) -> object:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=3600) as r:
        return json.loads(r.read() or b"null")


@contextmanager
def duckpacs_serve(data: Path, receiver: Orthanc) -> Iterator[str]:
    """``duckpacs serve`` over ``data`` with the receiver as peer; yields its HTTP base URL."""
    (data / "duckpacs.toml").write_text(
        '[archive]\nlog_level = "WARNING"\n[dimse]\nbind = "127.0.0.1"\n'
        f'[peers.receiver]\nae_title = "{receiver.aet}"\nhost = "127.0.0.1"\n'
        f"port = {receiver.dicom_port}\n"
    )
    port, http_port = free_port(), free_port()
    log = (data / "serve.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "duckpacs.cli.main", "serve", "--data", str(data), "--port",
         str(port), "--http-port", str(http_port), "--log-level", "INFO"],
        stdout=log, stderr=subprocess.STDOUT, env=ENV,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while "HTTP listening" not in (data / "serve.log").read_text():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("duckpacs did not start:\n" + (data / "serve.log").read_text())
            time.sleep(0.1)
        yield f"http://127.0.0.1:{http_port}"
    finally:
        proc.terminate()
        proc.wait(60)
        log.close()


def empty(receiver: Orthanc) -> None:
    for study in receiver.rest("/studies"):
        receiver.rest(f"/studies/{study}", method="DELETE")


def received(receiver: Orthanc) -> int:
    stats = receiver.rest("/statistics")
    return int(stats["CountInstances"])  # type: ignore[index]


def duckpacs_forward(base: str, study: str, count: int) -> float:
    started = time.perf_counter()
    http(f"{base}/api/studies/{study}/send", {"to": "receiver"})
    while True:
        overview = http(f"{base}/api/admin/queue?to=receiver&state=sent&limit=1")
        rows = {d["destination"]: d for d in overview["destinations"]}  # type: ignore[index]
        row = rows.get("receiver", {})
        if row.get("sent", 0) >= count and not row.get("waiting") and not row.get("sending"):
            return time.perf_counter() - started
        if row.get("failed") or (row.get("error") and row.get("waiting")):
            raise RuntimeError(f"duckpacs could not forward: {row}")
        time.sleep(0.05)


def reset_queue(data: Path) -> None:
    """Forget the previous run's jobs, so the next send forwards every instance again."""
    import sqlite3

    with sqlite3.connect(data / "queue.sqlite") as con:
        con.execute("DELETE FROM jobs")


def orthanc_forward(sender: Orthanc, study: str) -> float:
    (found,) = sender.rest("/tools/lookup", study.encode(), method="POST")  # type: ignore[misc]
    started = time.perf_counter()
    sender.rest(
        "/modalities/receiver/store",
        {"Resources": [found["ID"]], "Synchronous": True},
        method="POST",
    )
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mr-copies", type=int, default=4, help="copies of the MR series (4)")
    parser.add_argument(
        "--synthetic", type=int, default=2000, help="synthetic MR instances without the corpus"
    )
    parser.add_argument("--repeat", type=int, default=2, help="runs of each, best kept (2)")
    args = parser.parse_args()
    for name in ("storescu",):
        path = dcmtk(name)
        if path is None:
            print(f"skipped: DCMTK's {name} not installed (Debian package dcmtk)")
            return 0
        DIMSE_TOOLS[name] = path
    if orthanc_binary() is None:
        print("skipped: Orthanc not installed (Debian package orthanc)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-route-"))
    try:
        if MR_DIR.is_dir():
            label, files = (
                f"MR study ({args.mr_copies} x Toshiba)",
                mr_study(work / "mr", args.mr_copies),
            )
        else:
            print(f"note: {MR_DIR} absent; synthetic 64x64 MR instead")
            label = "synthetic MR 64x64"
            files = write_study(work / "mr", args.synthetic, seed=16)[1]
        study = study_uid(files[0])
        size_mb = sum(f.stat().st_size for f in files) / 1e6
        data = work / "duckpacs"
        data.mkdir()
        imported = subprocess.run(
            [sys.executable, "-m", "duckpacs.cli.main", "import", str(files[0].parent),
             "--data", str(data)], env=ENV, capture_output=True, text=True, check=False,
        )  # fmt: skip
        if imported.returncode != 0:
            raise RuntimeError(imported.stderr)
        ours, theirs = [], []
        with (
            run_orthanc(work / "receiver", {}, aet="RECEIVER") as receiver,
            run_orthanc(
                work / "sender", {"receiver": ("RECEIVER", "127.0.0.1", receiver.dicom_port)},
                aet="SENDER",
            ) as sender,
            duckpacs_serve(data, receiver) as base,
        ):  # fmt: skip
            storescu(sender.dicom_port, sender.aet, files, 4)
            for _ in range(args.repeat):
                empty(receiver)
                reset_queue(data)
                ours.append(duckpacs_forward(base, study, len(files)))
                assert received(receiver) == len(files), "duckpacs: receiver count"
                empty(receiver)
                theirs.append(orthanc_forward(sender, study))
                assert received(receiver) == len(files), "Orthanc: receiver count"
        d, o = min(ours), min(theirs)
        print(f"\n{label}: {len(files)} instances, {size_mb:.0f} MB, to an Orthanc receiver")
        print(f"{'metric':<34} {'duckpacs':>10} {'orthanc':>10} {'ratio':>7}")
        print(f"{'forward study (s)':<34} {d:>10.2f} {o:>10.2f} {o / d:>6.2f}x")
        print(f"{'instances/s':<34} {len(files) / d:>10.0f} {len(files) / o:>10.0f} {o / d:>6.2f}x")
        print(f"{'MB/s':<34} {size_mb / d:>10.1f} {size_mb / o:>10.1f} {o / d:>6.2f}x")
        print(f"runs (s): duckpacs {[round(t, 2) for t in ours]}, "
              f"orthanc {[round(t, 2) for t in theirs]}")  # fmt: skip
        associations = OPTIONS_BY_KEY["routing.associations"].default
        print(f"duckpacs: {associations} associations (routing.associations); Orthanc's job: 1")
        print("ratio > 1: duckpacs faster (target 1.5x)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

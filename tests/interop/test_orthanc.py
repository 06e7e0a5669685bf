"""Debian's Orthanc as a peer of `duckpacs serve` (the product path): Orthanc C-MOVEs each study
out of duckpacs to itself, then `duckpacs send` C-STOREs it to Orthanc again; both times the
count and the SHA-256 of every dataset match the files storescu sent in."""

from __future__ import annotations

import json
import subprocess
import urllib.request
from pathlib import Path

import pytest
from pydicom import dcmread

from tests.corpus import mr_series_sets
from tests.dimse_support import SCU_AE, dcmtk_tool
from tests.helpers import dcmtk_env, duckpacs_cmd, free_port, running_server
from tests.interop.orthanc import dataset_sha, orthanc_binary, orthanc_datasets, run_orthanc

pytestmark = pytest.mark.interop


def test_orthanc_moves_from_duckpacs_and_duckpacs_sends_to_orthanc(tmp_path: Path) -> None:
    """40 slices of each MR series: the synthetic one, the Toshiba one when present."""
    if orthanc_binary() is None:
        pytest.skip("Orthanc not installed (Debian package orthanc)")
    storescu = dcmtk_tool("storescu")
    studies: dict[str, list[Path]] = {}
    for series in mr_series_sets():
        first = dcmread(series[0], stop_before_pixels=True)
        studies[str(first.StudyInstanceUID)] = series[:40]
    files = [f for group in studies.values() for f in group]
    expected = {str(dcmread(f, stop_before_pixels=True).SOPInstanceUID): dataset_sha(f.read_bytes())
                for f in files}  # fmt: skip
    orthanc_port = free_port()
    data = tmp_path / "archive"
    data.mkdir()
    (data / "duckpacs.toml").write_text(
        f'[peers.scu]\nae_title = "{SCU_AE}"\nhost = "127.0.0.1"\nport = 1\n'
        f'[peers.orthanc]\nae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = {orthanc_port}\n'
    )
    with running_server(data) as server:
        port = server.dimse_port
        sent = subprocess.run(
            [storescu, "-aet", SCU_AE, "-aec", "DUCKPACS", "127.0.0.1", str(port),
             *map(str, files)],
            env=dcmtk_env(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        modalities = {"duckpacs": ("DUCKPACS", "127.0.0.1", port)}
        with run_orthanc(tmp_path / "orthanc", modalities, dicom_port=orthanc_port) as orthanc:
            for study in studies:
                orthanc.rest(
                    "/modalities/duckpacs/move",
                    {"Level": "Study", "Resources": [{"StudyInstanceUID": study}],
                     "TargetAet": "ORTHANC", "Synchronous": True},
                )  # fmt: skip
            assert orthanc_datasets(orthanc) == expected  # C-MOVE: duckpacs stored to Orthanc
            for instance in orthanc.rest("/instances"):
                request = urllib.request.Request(
                    f"http://127.0.0.1:{orthanc.http_port}/instances/{instance}", method="DELETE"
                )
                urllib.request.urlopen(request, timeout=30).read()
            assert orthanc.rest("/instances") == []
            for study, group in studies.items():
                send = subprocess.run(
                    duckpacs_cmd("send", "--to", "orthanc", f"StudyInstanceUID={study}",
                                 "--data", str(data), "--json"),
                    capture_output=True, text=True, timeout=120, check=False,
                )  # fmt: skip
                assert send.returncode == 0, send.stderr
                assert json.loads(send.stdout)["completed"] == len(group)
            assert orthanc_datasets(orthanc) == expected

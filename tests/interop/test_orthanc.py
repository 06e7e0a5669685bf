"""Debian's Orthanc as a peer: Orthanc C-MOVEs a study out of duckpacs to itself, so duckpacs
C-STOREs it to Orthanc; counts and SHA-256 of every dataset match what duckpacs stored."""

from __future__ import annotations

import hashlib
import subprocess
import urllib.request
from io import BytesIO
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread

from duckpacs.archive import part10
from tests.dimse_support import CORPUS, SCU_AE, make_settings
from tests.helpers import dcmtk_env, free_port, require_tool
from tests.interop.orthanc import orthanc_binary, run_orthanc
from tests.memory_archive import memory_archive

pytestmark = pytest.mark.interop
MR_SERIES = CORPUS / "mr_toshiba_dti"


def test_orthanc_moves_a_study_from_duckpacs(tmp_path: Path, running_server: Any) -> None:
    if orthanc_binary() is None:
        pytest.skip("Orthanc not installed (Debian package orthanc)")
    if not MR_SERIES.is_dir():
        pytest.skip(f"{MR_SERIES} absent (shared corpus)")
    storescu = require_tool("storescu")
    files = sorted(MR_SERIES.glob("*.dcm"))[:40]
    orthanc_port = free_port()
    archive = memory_archive()
    peers = {
        "scu": {"ae_title": SCU_AE, "host": "127.0.0.1", "port": 1},
        "orthanc": {"ae_title": "ORTHANC", "host": "127.0.0.1", "port": orthanc_port},
    }
    _server, port = running_server(archive, make_settings(tmp_path / "data", peers=peers))
    sent = subprocess.run(
        [storescu, "-aet", SCU_AE, "-aec", "DUCKPACS", "127.0.0.1", str(port), *map(str, files)],
        env=dcmtk_env(), capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert sent.returncode == 0, sent.stderr
    study = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    stored = {}
    for ref in archive.locate("STUDY", {"StudyInstanceUID": study}):
        data, _ts = archive.read_dataset(ref)
        stored[ref.sop_instance_uid] = hashlib.sha256(data).hexdigest()
    assert len(stored) == len(files)

    modalities = {"duckpacs": ("DUCKPACS", "127.0.0.1", port)}
    with run_orthanc(tmp_path / "orthanc", modalities, dicom_port=orthanc_port) as orthanc:
        job = orthanc.rest(
            "/modalities/duckpacs/move",
            {"Level": "Study", "Resources": [{"StudyInstanceUID": study}],
             "TargetAet": "ORTHANC", "Synchronous": True},
        )  # fmt: skip
        assert job is not None
        ids = orthanc.rest("/instances")
        assert len(ids) == len(files)
        got = {}
        for instance in ids:
            url = f"http://127.0.0.1:{orthanc.http_port}/instances/{instance}/file"
            data = urllib.request.urlopen(url, timeout=30).read()
            uid = str(dcmread(BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
            got[uid] = hashlib.sha256(data[part10.split(data).dataset_offset :]).hexdigest()
    assert got == stored

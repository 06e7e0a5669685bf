"""Orthanc queries duckpacs for names in every character set of tests/charset_names.py
(docs/CHARACTER-SETS.md): with `"DefaultEncoding": "Utf8"` (FACTS.md section 9: otherwise
Orthanc drops the characters Latin-1 lacks from its keys) it C-FINDs each name by exact
match through its REST API and gets exactly one study, with the same name."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.charset_names import NAMES, groups, name_file, patient_id
from tests.dimse_support import SCU_AE, dcmtk_tool
from tests.helpers import dcmtk_env, running_server
from tests.interop.orthanc import orthanc_binary, run_orthanc

pytestmark = pytest.mark.interop


def test_orthanc_finds_each_name_by_exact_match(tmp_path: Path) -> None:
    if orthanc_binary() is None:
        pytest.skip("Orthanc not installed (Debian package orthanc)")
    files = []
    for i in range(len(NAMES)):
        path = tmp_path / "in" / f"name{i:02d}.dcm"
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(name_file(i))
        files.append(str(path))
    data = tmp_path / "archive"
    data.mkdir()
    (data / "duckpacs.toml").write_text(
        f'[peers.scu]\nae_title = "{SCU_AE}"\nhost = "127.0.0.1"\nport = 1\n'
        '[peers.orthanc]\nae_title = "ORTHANC"\nhost = "127.0.0.1"\nport = 1\n'
    )
    with running_server(data) as server:
        sent = subprocess.run(
            [dcmtk_tool("storescu"), "-aet", SCU_AE, "-aec", "DUCKPACS", "127.0.0.1",
             str(server.dimse_port), *files],
            env=dcmtk_env(), capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert sent.returncode == 0, sent.stderr
        modalities = {"duckpacs": ("DUCKPACS", "127.0.0.1", server.dimse_port)}
        options = {"DefaultEncoding": "Utf8"}
        with run_orthanc(tmp_path / "orthanc", modalities, options=options) as orthanc:
            for i, (_, name) in enumerate(NAMES):
                query = orthanc.rest(
                    "/modalities/duckpacs/query",
                    {"Level": "Study", "Query": {"PatientName": name, "PatientID": ""}},
                )
                answers = orthanc.rest(f"/queries/{query['ID']}/answers?expand&simplify")
                assert len(answers) == 1, (name, answers)
                assert groups(answers[0]["PatientName"]) == groups(name), name
                assert answers[0]["PatientID"] == patient_id(i)

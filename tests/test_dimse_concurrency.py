"""One copy per SOP Instance UID under any concurrency (issue 25): several storescu
associations send the same instances at once, round after round; every UID is stored once,
`stats`, `verify --deep` and the index count the same instances, and every sender got success
(the same dataset again is the same instance)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests import crash_support as cs


def race(tmp_path: Path, instances: int, rounds: int, associations: int = 4) -> None:
    study, files = cs.write_study(tmp_path / "in", instances, seed=7000, rows=32)
    data = tmp_path / "archive"
    server = cs.start_server(data)
    try:
        for _round in range(rounds):
            senders = [cs.storescu(server.dimse_port, files) for _ in range(associations)]
            for sender in senders:
                out, _ = sender.communicate(timeout=300)
                assert sender.returncode == 0, out[-2000:]
                assert len(cs.acknowledged(out)) == instances
        found = cs.find_uids(server.dimse_port, study)
        assert sorted(found) == sorted(cs.sop_uid(p) for p in files)
    finally:
        assert server.stop() == 0
    stats = json.loads(cs.duckpacs("stats", "--data", str(data), "--json").stdout)
    assert stats["instances"] == instances
    verify = json.loads(cs.duckpacs("verify", "--deep", "--data", str(data), "--json").stdout)
    assert verify["ok"] and verify["instances"] == instances


@pytest.mark.interop
def test_four_associations_racing_store_each_instance_once(tmp_path: Path) -> None:
    race(tmp_path, instances=100, rounds=3)


@pytest.mark.soak
@pytest.mark.interop
def test_soak_four_associations_racing_twenty_rounds(tmp_path: Path) -> None:
    race(tmp_path, instances=500, rounds=20)

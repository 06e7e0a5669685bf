"""Two `duckpacs serve` nodes on one PostgreSQL index behind Debian's HAProxy (issue 26),
checked from the outside with DCMTK and HTTP, as a site would deploy them (docs/CLUSTER.md):

- storescu through HAProxy's DICOM frontend, several associations at once (balanced per
  connection): every instance is acknowledged and in the index exactly once, both nodes
  received some, and findscu and QIDO-RS through HAProxy find all of them from either node;
- a node that stops is marked DOWN by HAProxy's health check and the next associations go to
  the other node, with nothing refused;
- the HAProxy configuration in docs/CLUSTER.md is the one these tests run.

Both nodes receiving the same study at once (every instance once, none lost) is covered
without a balancer by tests/test_index_pg_faults.py.
"""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest
import requests

from tests import crash_support as cs
from tests.cluster_support import (
    Backend,
    HAProxy,
    haproxy_available,
    haproxy_config,
    run_haproxy,
    serve_nodes,
)
from tests.helpers import dcmtk_env, require_tool
from tests.pg_support import Cluster

pytestmark = pytest.mark.interop
needs_haproxy = pytest.mark.skipif(
    not haproxy_available(), reason="HAProxy (Debian haproxy) missing"
)

ROOT = Path(__file__).resolve().parents[2]
_SOP_UID = re.compile(r"\(0008,0018\) UI \[([^\]]*)\]")
_RELATED = re.compile(r"\(0020,1208\) IS \[([^\]]*)\]")


def _store_through(proxy: HAProxy, files: list[Path], associations: int) -> list[Path]:
    """storescu processes at once through the DICOM frontend, one association each;
    the files acknowledged with Success."""
    senders = [cs.storescu(proxy.dicom_port, files[i::associations]) for i in range(associations)]
    acked = []
    for sender in senders:
        out, _ = sender.communicate(timeout=180)
        acked += cs.acknowledged(out)
    return acked


def _findscu(port: int, *keys: str) -> str:
    run = subprocess.run(
        [require_tool("findscu"), "-v", "-S", "-aet", cs.SCU_AE, "-aec", "DUCKPACS",
         *[a for k in keys for a in ("-k", k)], "127.0.0.1", str(port)],
        capture_output=True, text=True, env=dcmtk_env(), timeout=60,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    return run.stdout + run.stderr


def _index_rows(dsn: str, study: str) -> list[tuple[str, str]]:
    import psycopg

    with psycopg.connect(dsn, password=Cluster.PASSWORD) as con:
        rows = con.execute(
            "SELECT sop_instance_uid, node FROM instances WHERE study_instance_uid = %s",
            (study,),
        ).fetchall()
    return [(str(uid), str(node)) for uid, node in rows]


@needs_haproxy
def test_storescu_through_haproxy_lands_every_instance_once(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    study, files = cs.write_study(tmp_path / "in", 72, 2601)
    uids = {cs.sop_uid(p) for p in files}
    dsn = pg_cluster.database()
    with (
        serve_nodes(tmp_path, dsn, Cluster.PASSWORD, ["a", "b"]) as nodes,
        run_haproxy(nodes) as proxy,
    ):
        acked = _store_through(proxy, files, associations=6)
        assert sorted(acked) == sorted(files)  # every one acknowledged, none twice
        deadline = time.monotonic() + 30
        while len(rows := _index_rows(dsn, study)) < len(files):  # the committers' lag
            assert time.monotonic() < deadline, f"{len(rows)} of {len(files)} indexed"
            time.sleep(0.3)
        assert sorted(uid for uid, _ in rows) == sorted(uids)  # each exactly once
        by_node = {node for _, node in rows}
        assert by_node == {"a", "b"}, by_node  # the associations were spread

        # Two findscu runs: round robin sends one to each node; both see every instance.
        before = proxy.sessions("dicom_nodes")
        for _ in range(2):
            found = _SOP_UID.findall(
                _findscu(
                    proxy.dicom_port,
                    "QueryRetrieveLevel=IMAGE",
                    f"StudyInstanceUID={study}",
                    "SOPInstanceUID",
                )
            )
            assert sorted(found) == sorted(uids)
        after = proxy.sessions("dicom_nodes")
        assert {n: after[n] - before[n] for n in after} == {"a": 1, "b": 1}
        related = _RELATED.findall(
            _findscu(
                proxy.dicom_port,
                "QueryRetrieveLevel=STUDY",
                f"StudyInstanceUID={study}",
                "NumberOfStudyRelatedInstances",
            )
        )
        assert related == [str(len(files))]  # the study's rows, written by both nodes

        before = proxy.sessions("http_nodes")
        url = f"http://127.0.0.1:{proxy.http_port}/dicom-web/studies/{study}/instances"
        for _ in range(2):
            answer = requests.get(url, headers={"Connection": "close"}, timeout=30)
            assert answer.status_code == 200, answer.text
            found = [item["00080018"]["Value"][0] for item in answer.json()]
            assert sorted(found) == sorted(uids)
        after = proxy.sessions("http_nodes")
        assert {n: after[n] - before[n] for n in after} == {"a": 1, "b": 1}


@needs_haproxy
def test_a_stopped_node_is_taken_out_and_the_other_receives_everything(
    tmp_path: Path, pg_cluster: Cluster
) -> None:
    study, files = cs.write_study(tmp_path / "in", 24, 2602)
    dsn = pg_cluster.database()
    with (
        serve_nodes(tmp_path, dsn, Cluster.PASSWORD, ["a", "b"]) as nodes,
        run_haproxy(nodes) as proxy,
    ):
        assert nodes[1].stop() == 0
        proxy.wait_states(
            {("dicom_nodes", "b"): ("DOWN", "L4CON"), ("http_nodes", "b"): ("DOWN", "L4CON")},
            timeout=30,
        )
        acked = _store_through(proxy, files, associations=4)
        assert sorted(acked) == sorted(files)
        deadline = time.monotonic() + 30
        while len(rows := _index_rows(dsn, study)) < len(files):
            assert time.monotonic() < deadline, f"{len(rows)} of {len(files)} indexed"
            time.sleep(0.3)
        assert {node for _, node in rows} == {"a"}
        answer = requests.get(
            f"http://127.0.0.1:{proxy.http_port}/dicom-web/studies/{study}/instances", timeout=30
        )
        assert answer.status_code == 200 and len(answer.json()) == len(files)


def test_the_guide_shows_the_configuration_the_tests_run() -> None:
    """docs/CLUSTER.md's haproxy.cfg block is :func:`haproxy_config` with the guide's
    example addresses, so what a reader copies is what these tests exercise."""
    guide = (ROOT / "docs" / "CLUSTER.md").read_text()
    block = re.search(r"```haproxy\n(.*?)```", guide, re.S)
    assert block is not None, "no haproxy block in docs/CLUSTER.md"
    nodes = [Backend("a", "10.0.0.11", 11112, 8042), Backend("b", "10.0.0.12", 11112, 8042)]
    expected = haproxy_config("10.0.0.10", 11112, 8042, nodes, "/run/haproxy/admin.sock")
    assert block.group(1) == expected

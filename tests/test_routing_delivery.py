"""Delivering queued jobs to real receivers (DCMTK storescp, a pynetdicom SCP): bytes as
stored, a syntax the receiver accepts, refusals per instance, a receiver that is down."""

from __future__ import annotations

from collections.abc import Iterator
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage  # type: ignore[attr-defined]

from duckpacs import _core, config
from duckpacs.archive.facade import Archive
from duckpacs.dicom import transcode
from duckpacs.routing.delivery import Deliverer, Retry
from duckpacs.routing.engine import index_locator
from duckpacs.routing.queue import Queue
from tests.helpers import free_port
from tests.routing_support import dataset_of, instance, peer_toml, receiver, write_config
from tests.synthetic import encode, uid


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[Archive]:
    with Archive.open(tmp_path / "data") as a:
        yield a


def settings_for(tmp_path: Path, peers: str) -> config.Settings:
    write_config(tmp_path / "data", peers + "[routing]\nretry_initial = 1\nretry_max = 2\n")
    return config.load(config_path=tmp_path / "data" / "duckpacs.toml", env={})


def fill(archive: Archive, count: int, name: str = "d") -> dict[str, bytes]:
    """``count`` CT instances stored; SOP Instance UID -> the Part 10 bytes sent in."""
    study = uid("delivery", name)
    sent = {}
    for n in range(1, count + 1):
        data = encode(instance(study, n))
        result = archive.store(data)
        sent[result.sop_instance_uid] = data
    archive.flush()
    return sent


def deliverer(archive: Archive, settings: config.Settings, queue: Queue, name: str) -> Deliverer:
    return Deliverer(name, settings=settings, queue=queue, locate=index_locator(archive),
                     store=archive.store_backend, retry=Retry.of(settings))  # fmt: skip


def test_instances_arrive_byte_for_byte_and_are_marked_sent(
    tmp_path: Path, archive: Archive
) -> None:
    sent = fill(archive, 20)
    with receiver(tmp_path / "recv") as r:
        s = settings_for(tmp_path, peer_toml("recv", r.ae_title, r.port))
        queue = Queue(tmp_path / "data" / "queue.sqlite")
        queue.enqueue([(u, "s") for u in sent], ["recv"], "send:test")
        step = deliverer(archive, s, queue, "recv").step()
        assert (step.outcome, step.sent) == ("sent", 20)
        got = r.copies()
    assert {u: [dataset_of(c) for c in cs] for u, cs in got.items()} == {
        u: [dataset_of(d)] for u, d in sent.items()
    }
    assert {j.state for j in queue.jobs(states=())} == {"sent"}
    queue.close()


def test_a_receiver_refusing_the_stored_syntax_gets_it_transcoded(
    tmp_path: Path, archive: Archive
) -> None:
    """Stored RLE Lossless; storescp by default takes uncompressed syntaxes only (PS3.8 9.3:
    we send only in a negotiated syntax): it gets Explicit VR Little Endian, same pixels."""
    study = uid("delivery", "rle")
    originals = {}
    for n in (1, 2):
        ds = instance(study, n)
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.compress(RLELossless, encoding_plugin="pydicom")
        result = archive.store(encode(ds, RLELossless))
        assert result.status == 0
        originals[result.sop_instance_uid] = ds
    archive.flush()
    with receiver(tmp_path / "recv", "PLAIN") as r:
        s = settings_for(tmp_path, peer_toml("recv", r.ae_title, r.port))
        queue = Queue(tmp_path / "data" / "queue.sqlite")
        queue.enqueue([(u, study) for u in originals], ["recv"], "send:test")
        assert deliverer(archive, s, queue, "recv").step().sent == 2
        got = r.copies()
    assert set(got) == set(originals)
    for u, (copy,) in got.items():
        received, original = dcmread(BytesIO(copy)), originals[u]
        assert received.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
        assert np.array_equal(received.pixel_array, original.pixel_array)
    queue.close()


def test_a_receiver_taking_only_the_default_syntax_gets_implicit_vr(
    tmp_path: Path, archive: Archive
) -> None:
    """Stored Explicit VR Little Endian; a receiver that accepts only Implicit VR Little
    Endian (the one syntax every SCP must take, PS3.5 10.1) still gets every instance,
    re-encoded with the same attributes and pixels."""
    sent = fill(archive, 3, "implicit")
    with receiver(tmp_path / "recv", "DEFAULTONLY", "+xi") as r:
        s = settings_for(tmp_path, peer_toml("recv", r.ae_title, r.port))
        queue = Queue(tmp_path / "data" / "queue.sqlite")
        queue.enqueue([(u, "s") for u in sent], ["recv"], "send:test")
        step = deliverer(archive, s, queue, "recv").step()
        got = r.copies()
    assert (step.outcome, step.sent, step.failed) == ("sent", 3, 0)
    assert set(got) == set(sent)
    for u, (copy,) in got.items():
        received, original = dcmread(BytesIO(copy)), dcmread(BytesIO(sent[u]))
        assert received.file_meta.TransferSyntaxUID == ImplicitVRLittleEndian
        assert received.PatientName == original.PatientName
        assert received.PixelData == original.PixelData
    queue.close()


def test_each_answer_reaches_the_caller_before_the_next_store(
    tmp_path: Path, archive: Archive
) -> None:
    """The C-STORE SCU reports every answer as it comes (so the queue can record a refusal
    before the next instance goes out, and a kill never turns a refusal into 'sent')."""
    sent = fill(archive, 4, "answers")
    refused_uid = sorted(sent)[1]
    scp = AE(ae_title="PICKY")
    scp.add_supported_context(CTImageStorage)
    port = free_port()

    def on_store(event: evt.Event) -> int:
        return 0xA700 if str(event.request.AffectedSOPInstanceUID) == refused_uid else 0

    server = scp.start_server(("127.0.0.1", port), block=False,
                              evt_handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
    order = sorted(sent)
    located = index_locator(archive)(order)
    answers: list[tuple[int, str | None]] = []

    def record(done: int, _total: int, failure: str | None) -> None:
        answers.append((done, failure))

    try:
        items = [located[u] for u in order]
        _core.send_stored(archive.store_backend, "127.0.0.1", port, "US", "PICKY", items,
                          transcode.dataset_in, progress=record)  # fmt: skip
    finally:
        server.shutdown()
    assert [done for done, _ in answers] == [1, 2, 3, 4]
    assert [failure is None for _, failure in answers] == [True, False, True, True]
    assert "0xA700" in str(answers[1][1])


def test_a_refused_instance_is_retried_alone_and_the_rest_are_sent(
    tmp_path: Path, archive: Archive
) -> None:
    sent = fill(archive, 5)
    refused_uid = sorted(sent)[2]
    stored: list[str] = []

    def on_store(event: evt.Event) -> int:
        uid_ = str(event.request.AffectedSOPInstanceUID)
        if uid_ == refused_uid:
            return 0xA700
        stored.append(uid_)
        return 0x0000

    scp = AE(ae_title="PICKY")
    scp.add_supported_context(CTImageStorage)
    port = free_port()
    server = scp.start_server(("127.0.0.1", port), block=False,
                              evt_handlers=[(evt.EVT_C_STORE, on_store)])  # fmt: skip
    try:
        s = settings_for(tmp_path, peer_toml("picky", "PICKY", port))
        queue = Queue(tmp_path / "data" / "queue.sqlite")
        queue.enqueue([(u, "s") for u in sent], ["picky"], "send:test")
        step = deliverer(archive, s, queue, "picky").step()
    finally:
        server.shutdown()
    assert (step.outcome, step.sent, step.failed) == ("sent", 4, 1)
    assert sorted(stored) == sorted(set(sent) - {refused_uid})
    (job,) = queue.jobs(states=("waiting",))
    assert job.sop_instance_uid == refused_uid and job.attempts == 1
    assert "0xA700" in job.error
    assert [r["failures"] for r in queue.summary()] == [0]  # the destination is fine
    queue.close()


def test_a_receiver_down_at_first_gets_everything_once_it_is_up(
    tmp_path: Path, archive: Archive
) -> None:
    sent = fill(archive, 10)
    port = free_port()
    s = settings_for(tmp_path, peer_toml("late", "LATE", port))
    queue = Queue(tmp_path / "data" / "queue.sqlite")
    queue.enqueue([(u, "s") for u in sent], ["late"], "route:test")
    d = deliverer(archive, s, queue, "late")
    step = d.step()
    assert step.outcome == "down" and "LATE" in step.reason
    assert {(j.state, j.attempts) for j in queue.jobs(states=())} == {("waiting", 0)}
    from tests.routing_support import Receiver

    r = Receiver("LATE", port, tmp_path / "recv")
    r.start()
    try:
        queue.retry(destination="late")
        assert d.step().sent == 10
    finally:
        r.stop()
    assert {u: len(c) for u, c in r.copies().items()} == dict.fromkeys(sent, 1)
    queue.close()


def test_a_job_whose_instance_left_the_archive_is_dropped(tmp_path: Path, archive: Archive) -> None:
    sent = fill(archive, 2)
    gone = sorted(sent)[0]
    ref = archive.lookup(gone)
    assert ref is not None
    archive.delete([ref])
    with receiver(tmp_path / "recv") as r:
        s = settings_for(tmp_path, peer_toml("recv", r.ae_title, r.port))
        queue = Queue(tmp_path / "data" / "queue.sqlite")
        queue.enqueue([(u, "s") for u in sent], ["recv"], "send:test")
        assert deliverer(archive, s, queue, "recv").step().sent == 1
    states = {j.sop_instance_uid: (j.state, j.error) for j in queue.jobs(states=())}
    assert states[gone] == ("dropped", "no longer in the archive")
    queue.close()

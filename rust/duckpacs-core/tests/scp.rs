//! The archive's DIMSE services (`net::scp`) end to end on 127.0.0.1, over a real store and
//! write path in a temporary folder, with the orchestrator played by a test host: C-STORE
//! into the archive (and nothing stored from a truncated dataset), C-FIND answers and
//! C-CANCEL during them, C-GET of what was stored, a sub-operation the peer cannot take,
//! the rare services (a worklist C-FIND's answers, an N-CREATE's chosen UID and comment).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use duckpacs_core::archive::{Known, Lookup, OnConflict, Writer};
use duckpacs_core::net::dimse::{priority, CommandField};
use duckpacs_core::net::scp::{
    ArchivePolicy, Destination, Host, Located, Peer, Permissions, Query, RareReply, Refusal, Row,
    RowValue,
};
use duckpacs_core::net::{
    connect, Command, Proposal, Reply, Server, ServerConfig, Status, Timeouts,
};
use duckpacs_core::part10;
use duckpacs_core::store::{Options, Store};

const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
const GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
const EXPLICIT: &str = "1.2.840.10008.1.2.1";
const JPEG_LOSSLESS: &str = "1.2.840.10008.1.2.4.70";
const WORKLIST: &str = "1.2.840.10008.5.1.4.31";
const MPPS: &str = "1.2.840.10008.3.1.2.3.3";

struct NoIndex;
impl Lookup for NoIndex {
    fn lookup(&self, _: &[String]) -> Result<HashMap<String, Known>, String> {
        Ok(HashMap::new())
    }
}

/// The orchestrator: everyone may do everything; finds answer `rows` after `delay`;
/// locate answers what the writer stored.
struct TestHost {
    rows: usize,
    delay: Duration,
    stored: Mutex<Vec<Located>>,
}

impl Host for TestHost {
    fn admit(&self, _: &Peer) -> Result<Permissions, Refusal> {
        Ok(Permissions {
            echo: true,
            store: true,
            find: true,
            get: true,
            move_: true,
        })
    }
    fn find(&self, _: &str, q: &Query) -> Result<Vec<Row>, String> {
        thread::sleep(self.delay);
        Ok((0..self.rows)
            .map(|i| {
                q.return_keys
                    .iter()
                    .map(|k| (k.clone(), RowValue::Text(format!("1.2.3.{i}"))))
                    .collect()
            })
            .collect())
    }
    fn locate(&self, _: &str, _: &Query) -> Result<Vec<Located>, String> {
        Ok(self.stored.lock().unwrap().clone())
    }
    fn transcode(&self, _: &[u8], ts: &str) -> Result<Vec<u8>, String> {
        Err(format!("no codec for {ts} here"))
    }
    fn destination(&self, _: &str) -> Option<Destination> {
        None
    }
    /// A worklist C-FIND answers `rows` patients; an N-CREATE without a UID gets one.
    fn rare(&self, _: &Peer, c: &Command, _: &[u8], _: &str) -> RareReply {
        match c.field {
            CommandField::C_FIND_RQ => RareReply {
                status: 0x0000,
                pending: (0..self.rows)
                    .map(|i| explicit(0x0010_0020, b"LO", format!("P{i:03}").as_bytes()))
                    .collect(),
                ..RareReply::default()
            },
            CommandField::N_CREATE_RQ if c.affected_sop_instance_uid.is_none() => RareReply {
                status: 0x0120,
                comment: Some("PerformedProcedureStepStatus missing".into()),
                instance_uid: Some("1.2.3.99".into()),
                ..RareReply::default()
            },
            _ => RareReply {
                status: 0x0211,
                ..RareReply::default()
            },
        }
    }
    fn report_elsewhere(&self, _: &Peer, _: &Command, _: u16, _: &[u8]) {}
}

fn explicit(tag: u32, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    out.extend_from_slice(&((tag & 0xFFFF) as u16).to_le_bytes());
    out.extend_from_slice(vr);
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    out
}

fn dataset(uid: &str) -> Vec<u8> {
    let mut uid_value = uid.as_bytes().to_vec();
    if uid_value.len() % 2 == 1 {
        uid_value.push(0);
    }
    [
        explicit(0x0008_0016, b"UI", b"1.2.840.10008.5.1.4.1.1.2\0"),
        explicit(0x0008_0018, b"UI", &uid_value),
        explicit(0x0008_0060, b"CS", b"CT"),
        explicit(0x0020_000D, b"UI", b"1.2.3.4\0"),
        explicit(0x0020_000E, b"UI", b"1.2.3.4.5\0"),
    ]
    .concat()
}

struct Archive {
    server: Option<Server>,
    store: Arc<Store>,
    host: Arc<TestHost>,
    _dir: tempfile::TempDir,
}

impl Drop for Archive {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown(Duration::from_secs(1));
        }
    }
}

fn archive(rows: usize, delay: Duration) -> (Archive, SocketAddr) {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(Store::open(dir.path(), Some(1), Options::default()).unwrap());
    let writer = Arc::new(Writer::new(
        store.clone(),
        Box::new(NoIndex),
        OnConflict::KeepFirst,
        512,
    ));
    let host = Arc::new(TestHost {
        rows,
        delay,
        stored: Mutex::new(Vec::new()),
    });
    let timeouts = Timeouts {
        artim: Duration::from_secs(2),
        idle: Some(Duration::from_secs(5)),
    };
    let policy = ArchivePolicy {
        host: host.clone(),
        writer,
        store: store.clone(),
        our_ae: "DUCKPACS".into(),
        timeouts,
    };
    let config = ServerConfig {
        timeouts,
        ..ServerConfig::default()
    };
    let server = Server::bind("127.0.0.1:0", config, Arc::new(policy)).unwrap();
    let addr = server.local_addr();
    (
        Archive {
            server: Some(server),
            store,
            host,
            _dir: dir,
        },
        addr,
    )
}

fn timeouts() -> Timeouts {
    Timeouts {
        artim: Duration::from_secs(2),
        idle: Some(Duration::from_secs(5)),
    }
}

#[test]
fn c_store_goes_into_the_archive_and_c_get_brings_it_back() {
    let (a, addr) = archive(0, Duration::ZERO);
    let proposal = Proposal::new("SCU", "DUCKPACS").with_context(CT, &[EXPLICIT]);
    let mut assoc = connect(addr, &proposal, timeouts()).unwrap();
    let rsp = assoc
        .store(
            CT,
            "1.9.1",
            Some(EXPLICIT),
            &mut dataset("1.9.1").as_slice(),
        )
        .unwrap();
    assert_eq!(rsp.status_or_success(), Status::SUCCESS);
    let again = assoc
        .store(
            CT,
            "1.9.1",
            Some(EXPLICIT),
            &mut dataset("1.9.1").as_slice(),
        )
        .unwrap();
    assert_eq!(
        again.status_or_success(),
        Status::SUCCESS,
        "the same instance again"
    );
    assoc.release().unwrap();
    let entries = a.store.tail(&HashMap::new()).unwrap().instances;
    assert_eq!(entries.len(), 1);
    let stored = a.store.get(entries[0].location).unwrap();
    let framing = part10::split(&stored).unwrap();
    assert_eq!(
        &stored[framing.dataset_offset..],
        dataset("1.9.1").as_slice()
    );
    a.host.stored.lock().unwrap().push(Located {
        sop_instance_uid: "1.9.1".into(),
        sop_class_uid: CT.into(),
        transfer_syntax: EXPLICIT.into(),
        location: entries[0].location,
    });

    // C-GET: the same bytes come back as a C-STORE sub-operation on this association.
    let proposal = Proposal::new("SCU", "DUCKPACS")
        .with_context(GET, &[EXPLICIT])
        .with_context(CT, &[EXPLICIT])
        .with_role(CT, true, true);
    let mut assoc = connect(addr, &proposal, timeouts()).unwrap();
    let id = assoc.next_message_id();
    let get_ctx = assoc.negotiated().context_for(GET, None).unwrap().id;
    let identifier = [
        explicit(0x0008_0052, b"CS", b"STUDY "),
        explicit(0x0020_000D, b"UI", b"1.2.3.4\0"),
    ]
    .concat();
    assoc
        .send_bytes(
            get_ctx,
            &Command::c_get_rq(id, GET, priority::MEDIUM),
            &identifier,
        )
        .unwrap();
    let mut received = Vec::new();
    loop {
        match assoc.next_reply(id).unwrap() {
            Reply::Request {
                context_id,
                command,
            } => {
                assoc.receive_dataset(&mut received).unwrap();
                assoc
                    .send(context_id, &command.response(Status::SUCCESS), None)
                    .unwrap();
            }
            Reply::Response(rsp) if rsp.status_or_success() == Status::PENDING => {}
            Reply::Response(rsp) => {
                assert_eq!(rsp.status_or_success(), Status::SUCCESS);
                assert_eq!(rsp.completed, Some(1));
                break;
            }
        }
    }
    assert_eq!(received, dataset("1.9.1"));
    assoc.release().unwrap();
}

#[test]
fn a_sub_operation_the_peer_cannot_take_fails_with_its_uid_listed() {
    let (a, addr) = archive(0, Duration::ZERO);
    let proposal = Proposal::new("SCU", "DUCKPACS").with_context(CT, &[EXPLICIT]);
    let mut assoc = connect(addr, &proposal, timeouts()).unwrap();
    assoc
        .store(
            CT,
            "1.9.2",
            Some(EXPLICIT),
            &mut dataset("1.9.2").as_slice(),
        )
        .unwrap();
    assoc.release().unwrap();
    let entry = a.store.tail(&HashMap::new()).unwrap().instances.remove(0);
    a.host.stored.lock().unwrap().push(Located {
        sop_instance_uid: "1.9.2".into(),
        sop_class_uid: CT.into(),
        transfer_syntax: EXPLICIT.into(),
        location: entry.location,
    });
    // The peer takes CT only in JPEG Lossless: never send what was not negotiated.
    let proposal = Proposal::new("SCU", "DUCKPACS")
        .with_context(GET, &[EXPLICIT])
        .with_context(CT, &[JPEG_LOSSLESS])
        .with_role(CT, true, true);
    let mut assoc = connect(addr, &proposal, timeouts()).unwrap();
    let id = assoc.next_message_id();
    let ctx = assoc.negotiated().context_for(GET, None).unwrap().id;
    let identifier = [
        explicit(0x0008_0052, b"CS", b"STUDY "),
        explicit(0x0020_000D, b"UI", b"1.2.3.4\0"),
    ]
    .concat();
    assoc
        .send_bytes(
            ctx,
            &Command::c_get_rq(id, GET, priority::MEDIUM),
            &identifier,
        )
        .unwrap();
    let Reply::Response(rsp) = assoc.next_reply(id).unwrap() else {
        panic!("no sub-operation expected")
    };
    assert_eq!(
        rsp.status_or_success(),
        Status::OUT_OF_RESOURCES_SUB_OPERATIONS
    );
    assert_eq!((rsp.failed, rsp.completed), (Some(1), Some(0)));
    let mut list = Vec::new();
    assoc.receive_dataset(&mut list).unwrap();
    assert!(
        list.windows(5).any(|w| w == b"1.9.2"),
        "Failed SOP Instance UID List"
    );
    assoc.release().unwrap();
}

#[test]
fn c_cancel_ends_c_find_answers() {
    let (_a, addr) = archive(500, Duration::from_millis(300));
    let proposal = Proposal::new("SCU", "DUCKPACS").with_context(FIND, &[EXPLICIT]);
    let mut assoc = connect(addr, &proposal, timeouts()).unwrap();
    let ctx = assoc.negotiated().context_for(FIND, None).unwrap().id;
    let id = assoc.next_message_id();
    let identifier = [
        explicit(0x0008_0052, b"CS", b"STUDY "),
        explicit(0x0020_000D, b"UI", b""),
    ]
    .concat();
    assoc
        .send_bytes(
            ctx,
            &Command::c_find_rq(id, FIND, priority::MEDIUM),
            &identifier,
        )
        .unwrap();
    // Cancelled while the query still runs: the answers stop at once.
    assoc.send(ctx, &Command::c_cancel_rq(id), None).unwrap();
    let mut pending = 0;
    loop {
        let Reply::Response(rsp) = assoc.next_reply(id).unwrap() else {
            panic!()
        };
        if rsp.status_or_success() == Status::PENDING {
            pending += 1;
            assoc.skip_dataset().unwrap();
            continue;
        }
        assert_eq!(rsp.status_or_success(), Status::CANCEL);
        break;
    }
    assert_eq!(pending, 0);
    // Not cancelled: every answer, then success.
    let id = assoc.next_message_id();
    assoc
        .send_bytes(
            ctx,
            &Command::c_find_rq(id, FIND, priority::MEDIUM),
            &identifier,
        )
        .unwrap();
    let mut answers = 0;
    loop {
        let Reply::Response(rsp) = assoc.next_reply(id).unwrap() else {
            panic!()
        };
        if rsp.status_or_success() == Status::PENDING {
            answers += 1;
            assoc.skip_dataset().unwrap();
            continue;
        }
        assert_eq!(rsp.status_or_success(), Status::SUCCESS);
        break;
    }
    assert_eq!(answers, 500);
    assoc.release().unwrap();
}

#[test]
fn a_dataset_cut_short_stores_nothing_and_the_server_goes_on() {
    let (a, addr) = archive(0, Duration::ZERO);
    let proposal = Proposal::new("SCU", "DUCKPACS").with_context(CT, &[EXPLICIT]);
    let mut assoc = connect(addr, &proposal, timeouts()).unwrap();
    let ctx = assoc.negotiated().context_for(CT, None).unwrap().id;
    let id = assoc.next_message_id();
    // A source that fails half-way: the association is aborted mid-dataset.
    struct Cut(Vec<u8>, usize);
    impl std::io::Read for Cut {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.1 >= self.0.len() / 2 {
                return Err(std::io::Error::other("cut"));
            }
            let n = buf.len().min(self.0.len() / 2 - self.1);
            buf[..n].copy_from_slice(&self.0[self.1..self.1 + n]);
            self.1 += n;
            Ok(n)
        }
    }
    let mut cut = Cut(dataset("1.9.3"), 0);
    let rq = Command::c_store_rq(id, CT, "1.9.3", priority::MEDIUM);
    assert!(assoc.send(ctx, &rq, Some(&mut cut)).is_err());
    thread::sleep(Duration::from_millis(200));
    assert!(a.store.tail(&HashMap::new()).unwrap().instances.is_empty());
    // Another peer is served.
    let mut other = connect(addr, &proposal, timeouts()).unwrap();
    let rsp = other
        .store(
            CT,
            "1.9.4",
            Some(EXPLICIT),
            &mut dataset("1.9.4").as_slice(),
        )
        .unwrap();
    assert_eq!(rsp.status_or_success(), Status::SUCCESS);
    other.release().unwrap();
}

#[test]
fn worklist_answers_and_mpps_replies_come_from_the_host() {
    let (_a, addr) = archive(3, Duration::ZERO);
    let proposal = Proposal::new("SCU", "DUCKPACS")
        .with_context(WORKLIST, &[EXPLICIT])
        .with_context(MPPS, &[EXPLICIT]);
    let mut assoc = connect(addr, &proposal, timeouts()).unwrap();
    let wl = assoc.negotiated().context_for(WORKLIST, None).unwrap().id;
    let mpps = assoc.negotiated().context_for(MPPS, None).unwrap().id;
    let id = assoc.next_message_id();
    let identifier = explicit(0x0010_0020, b"LO", b"");
    assoc
        .send_bytes(
            wl,
            &Command::c_find_rq(id, WORKLIST, priority::MEDIUM),
            &identifier,
        )
        .unwrap();
    let mut answers = 0;
    loop {
        let Reply::Response(rsp) = assoc.next_reply(id).unwrap() else {
            panic!()
        };
        if rsp.status_or_success() == Status::PENDING {
            answers += 1;
            assoc.skip_dataset().unwrap();
            continue;
        }
        assert_eq!(rsp.status_or_success(), Status::SUCCESS);
        break;
    }
    assert_eq!(answers, 3);
    let id = assoc.next_message_id();
    assoc
        .send_bytes(mpps, &Command::n_create_rq(id, MPPS, None), &identifier)
        .unwrap();
    let Reply::Response(rsp) = assoc.next_reply(id).unwrap() else {
        panic!()
    };
    assert_eq!(rsp.status_or_success(), Status(0x0120));
    assert_eq!(rsp.affected_sop_instance_uid.as_deref(), Some("1.2.3.99"));
    assert_eq!(
        rsp.error_comment.as_deref(),
        Some("PerformedProcedureStepStatus missing")
    );
    assoc.release().unwrap();
}

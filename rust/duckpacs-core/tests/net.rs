//! The network layers end to end on 127.0.0.1: a Rust requestor against the Rust server
//! (C-ECHO, C-STORE streamed, C-GET with a C-STORE sub-operation on the same association,
//! release, release collision, abort, timers, the association limit, 200 silent
//! connections), hostile peers speaking raw bytes (garbage, absurd lengths, a malformed
//! A-ASSOCIATE-RQ, a truncated dataset), and DCMTK's echoscu when it is installed.
//! Timers are short here (ARTIM 1 s, idle 1 s); no assertion depends on timing beyond
//! "eventually, within a generous bound".

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::{Arc, Barrier, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use duckpacs_core::net::dimse::{priority, SubOperations};
use duckpacs_core::net::pdu::{self, Abort, Pdu, Rejection, RoleSelection};
use duckpacs_core::net::{
    connect, Acceptance, Accepted, Association, AssociationRequest, Command, CommandField,
    Connection, ContextDecision, DatasetSink, EchoScp, Error, Policy, Proposal, Received, Reply,
    Router, Server, ServerConfig, Service, Status, Timeouts, TransferSyntaxes,
};

const VERIFICATION: &str = "1.2.840.10008.1.1";
const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const STUDY_GET: &str = "1.2.840.10008.5.1.4.1.2.2.3";
const IMPLICIT: &str = "1.2.840.10008.1.2";
const EXPLICIT: &str = "1.2.840.10008.1.2.1";

/// What the store service saw: completed datasets and how many were dropped unfinished.
#[derive(Default)]
struct Stores {
    completed: Vec<(String, Vec<u8>)>,
    discarded: usize,
    largest_fragment: usize,
}

type Shared = Arc<Mutex<Stores>>;

struct TestPolicy {
    stores: Shared,
}

impl Policy for TestPolicy {
    fn decide(&self, r: &AssociationRequest<'_>) -> Result<Accepted, Rejection> {
        if r.called_ae() != "DUCKPACS" {
            return Err(Rejection::called_ae_not_recognized());
        }
        if r.calling_ae() == "NOBODY" {
            return Err(Rejection::calling_ae_not_recognized());
        }
        let uncompressed = TransferSyntaxes::new(&[EXPLICIT, IMPLICIT], false);
        let storable = TransferSyntaxes::new(&[EXPLICIT, IMPLICIT], true);
        let mut acceptance = Acceptance::by_abstract_syntax(r.contexts(), |a| match a {
            VERIFICATION | STUDY_GET => ContextDecision::Accept(uncompressed.clone()),
            CT => ContextDecision::Accept(storable.clone()),
            _ => ContextDecision::Refuse(pdu::ContextResult::AbstractSyntaxNotSupported),
        });
        acceptance.roles = r
            .roles()
            .iter()
            .map(|p| RoleSelection {
                sop_class_uid: p.sop_class_uid.clone(),
                scu: true,
                scp: true,
            })
            .collect();
        let service = Router::new()
            .route(CommandField::C_ECHO_RQ, EchoScp)
            .route(
                CommandField::C_STORE_RQ,
                StoreScp {
                    stores: Arc::clone(&self.stores),
                },
            )
            .route(CommandField::C_GET_RQ, GetScp);
        Ok(Accepted {
            acceptance,
            service: Box::new(service),
        })
    }
}

/// Keeps a dataset in memory; the instance UID "fail" makes it fail like a full disk.
struct TestSink {
    uid: String,
    data: Vec<u8>,
    stores: Shared,
    finished: bool,
}

impl DatasetSink for TestSink {
    fn write(&mut self, fragment: &[u8]) -> io::Result<()> {
        if self.uid == "1.2.3.666" {
            return Err(io::Error::other("disk full"));
        }
        let mut s = self.stores.lock().unwrap();
        s.largest_fragment = s.largest_fragment.max(fragment.len());
        self.data.extend_from_slice(fragment);
        Ok(())
    }
    fn finish(&mut self) -> io::Result<()> {
        self.finished = true;
        let data = std::mem::take(&mut self.data);
        self.stores
            .lock()
            .unwrap()
            .completed
            .push((self.uid.clone(), data));
        Ok(())
    }
}

impl Drop for TestSink {
    fn drop(&mut self) {
        if !self.finished {
            self.stores.lock().unwrap().discarded += 1;
        }
    }
}

struct StoreScp {
    stores: Shared,
}

impl Service for StoreScp {
    fn handle(
        &mut self,
        assoc: &mut Association,
        ctx: u8,
        cmd: Command,
    ) -> duckpacs_core::net::Result<()> {
        let mut sink = TestSink {
            uid: cmd.affected_sop_instance_uid.clone().unwrap_or_default(),
            data: Vec::new(),
            stores: Arc::clone(&self.stores),
            finished: false,
        };
        let status = match assoc.receive_dataset(&mut sink) {
            Ok(()) => Status::SUCCESS,
            Err(Error::Sink(_)) => Status::OUT_OF_RESOURCES,
            Err(e) => return Err(e),
        };
        assoc.send(ctx, &cmd.response(status), None)
    }
}

/// C-GET SCP: one C-STORE sub-operation back to the requestor (on a context where it took
/// the SCP role), then the final response, or Cancel when a C-CANCEL-RQ came meanwhile.
struct GetScp;

impl Service for GetScp {
    fn handle(
        &mut self,
        assoc: &mut Association,
        ctx: u8,
        cmd: Command,
    ) -> duckpacs_core::net::Result<()> {
        assoc.skip_dataset()?;
        let dataset = part10_ct("1.2.3.9").1;
        let status = match assoc.store(CT, "1.2.3.9", None, &mut dataset.as_slice()) {
            Ok(rsp) => rsp.status_or_success(),
            Err(Error::Usage(_)) => {
                // The requestor did not take the SCP role for CT.
                let rsp = cmd.response(Status::OUT_OF_RESOURCES_SUB_OPERATIONS);
                return assoc.send(ctx, &rsp, None);
            }
            Err(e) => return Err(e),
        };
        let done = SubOperations {
            remaining: None,
            completed: u16::from(status.is_success()),
            failed: u16::from(!status.is_success()),
            warning: 0,
        };
        let final_status = if assoc.take_cancel() == cmd.message_id {
            Status::CANCEL
        } else {
            Status::SUCCESS
        };
        assoc.send(
            ctx,
            &cmd.response(final_status).with_sub_operations(done),
            None,
        )
    }
}

fn timeouts() -> Timeouts {
    Timeouts {
        artim: Duration::from_secs(1),
        idle: Some(Duration::from_secs(1)),
    }
}

fn start(config: ServerConfig) -> (Server, Shared) {
    let stores = Shared::default();
    let policy = Arc::new(TestPolicy {
        stores: Arc::clone(&stores),
    });
    let server = Server::bind("127.0.0.1:0", config, policy).unwrap();
    (server, stores)
}

fn test_config() -> ServerConfig {
    ServerConfig {
        max_pdu: 16_384,
        timeouts: timeouts(),
        ..ServerConfig::default()
    }
}

fn proposal(called: &str) -> Proposal {
    Proposal::new("TESTSCU", called)
        .with_context(VERIFICATION, &[IMPLICIT])
        .with_context(CT, &[EXPLICIT])
}

fn associate(addr: SocketAddr) -> Association {
    connect(addr, &proposal("DUCKPACS"), timeouts()).unwrap()
}

/// Wait until `cond` holds (bounded: a failure means it never did).
fn eventually(what: &str, cond: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !cond() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn echo_and_release() {
    let (server, _) = start(test_config());
    let mut assoc = associate(server.local_addr());
    let n = assoc.negotiated();
    assert_eq!(n.peer_max_pdu, 16_384);
    assert_eq!(n.contexts.len(), 2);
    assert_eq!(
        n.peer_implementation_class_uid,
        duckpacs_core::net::assoc::IMPLEMENTATION_CLASS_UID
    );
    for _ in 0..3 {
        assert_eq!(assoc.echo().unwrap(), Status::SUCCESS);
    }
    assert_eq!(assoc.poll().unwrap(), None, "nothing waiting");
    assoc.release().unwrap();
    assert!(!assoc.is_open());
    assert!(matches!(assoc.echo(), Err(Error::Usage(_))));
    eventually("the association ends on the server", || {
        server.load().established == 0
    });
    server.shutdown(Duration::from_secs(1));
}

#[test]
fn rejections_carry_their_reasons() {
    let (server, _) = start(test_config());
    let addr = server.local_addr();
    let e = connect(addr, &proposal("SOMEONE-ELSE"), timeouts()).unwrap_err();
    assert!(
        matches!(e, Error::Rejected(r) if r == Rejection::called_ae_not_recognized()),
        "{e}"
    );
    let p = Proposal {
        calling_ae: "NOBODY".into(),
        ..proposal("DUCKPACS")
    };
    let e = connect(addr, &p, timeouts()).unwrap_err();
    assert!(matches!(e, Error::Rejected(r) if r.reason == 3), "{e}");
    // Only unknown abstract syntaxes: accepted association without usable contexts.
    let p = Proposal::new("TESTSCU", "DUCKPACS").with_context("1.2.3.4", &[IMPLICIT]);
    let e = connect(addr, &p, timeouts()).unwrap_err();
    assert!(matches!(e, Error::Negotiation(_)), "{e}");
}

#[test]
fn store_streams_large_datasets_and_survives_a_failing_sink() {
    let (server, stores) = start(test_config());
    let mut assoc = associate(server.local_addr());
    // 5 MB through a 16 KiB maximum PDU: about 320 fragments, none above the limit.
    let data: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    let rsp = assoc
        .store(CT, "1.2.3.1", None, &mut data.as_slice())
        .unwrap();
    assert_eq!(rsp.status, Some(Status::SUCCESS));
    assert_eq!(rsp.affected_sop_instance_uid.as_deref(), Some("1.2.3.1"));
    // An empty dataset and one exactly one fragment long.
    let frag = assoc.negotiated().max_send_fragment();
    assoc.store(CT, "1.2.3.2", None, &mut &[][..]).unwrap();
    let exact = vec![1u8; frag];
    assoc
        .store(CT, "1.2.3.3", None, &mut exact.as_slice())
        .unwrap();
    // The sink fails: 0xA700, and the association carries on.
    let rsp = assoc
        .store(CT, "1.2.3.666", None, &mut data.as_slice())
        .unwrap();
    assert_eq!(rsp.status, Some(Status::OUT_OF_RESOURCES));
    assert_eq!(assoc.echo().unwrap(), Status::SUCCESS);
    assoc.release().unwrap();
    let s = stores.lock().unwrap();
    assert_eq!(s.completed.len(), 3);
    assert_eq!(s.completed[0].1, data);
    assert!(s.completed[1].1.is_empty());
    assert_eq!(s.completed[2].1, exact);
    assert_eq!(s.discarded, 1);
    assert!(s.largest_fragment <= 16_384 - 6, "{}", s.largest_fragment);
}

#[test]
fn c_get_brings_a_c_store_back_on_the_same_association() {
    let (server, _) = start(test_config());
    let p = Proposal::new("GETSCU", "DUCKPACS")
        .with_context(STUDY_GET, &[IMPLICIT])
        .with_context(CT, &[EXPLICIT])
        .with_role(CT, false, true);
    let mut assoc = connect(server.local_addr(), &p, timeouts()).unwrap();
    let get_ctx = assoc.negotiated().context_for(STUDY_GET, None).unwrap().id;
    let id = assoc.next_message_id();
    let rq = Command::c_get_rq(id, STUDY_GET, priority::MEDIUM);
    assoc.send_bytes(get_ctx, &rq, &[0u8; 8]).unwrap();
    let mut received = Vec::new();
    let last = loop {
        match assoc.next_reply(id).unwrap() {
            Reply::Request {
                context_id,
                command,
            } => {
                assert_eq!(command.field, CommandField::C_STORE_RQ);
                assert!(assoc.context(context_id).unwrap().requestor_scp);
                assoc.receive_dataset(&mut received).unwrap();
                assoc
                    .send(context_id, &command.response(Status::SUCCESS), None)
                    .unwrap();
            }
            Reply::Response(rsp) if rsp.status_or_success().is_pending() => {}
            Reply::Response(rsp) => break rsp,
        }
    };
    assert_eq!(received, part10_ct("1.2.3.9").1);
    assert_eq!(last.status, Some(Status::SUCCESS));
    assert_eq!((last.completed, last.failed), (Some(1), Some(0)));
    assoc.release().unwrap();
}

#[test]
fn c_cancel_during_a_c_get_sub_operation_is_kept_for_the_scp() {
    let (server, _) = start(test_config());
    let p = Proposal::new("GETSCU", "DUCKPACS")
        .with_context(STUDY_GET, &[IMPLICIT])
        .with_context(CT, &[EXPLICIT])
        .with_role(CT, false, true);
    let mut assoc = connect(server.local_addr(), &p, timeouts()).unwrap();
    let get_ctx = assoc.negotiated().context_for(STUDY_GET, None).unwrap().id;
    let id = assoc.next_message_id();
    let rq = Command::c_get_rq(id, STUDY_GET, priority::MEDIUM);
    assoc.send_bytes(get_ctx, &rq, &[0u8; 8]).unwrap();
    assoc
        .send(get_ctx, &Command::c_cancel_rq(id), None)
        .unwrap();
    let last = loop {
        match assoc.next_reply(id).unwrap() {
            Reply::Request {
                context_id,
                command,
            } => {
                assoc.skip_dataset().unwrap();
                assoc
                    .send(context_id, &command.response(Status::SUCCESS), None)
                    .unwrap();
            }
            Reply::Response(rsp) if rsp.status_or_success().is_pending() => {}
            Reply::Response(rsp) => break rsp,
        }
    };
    assert_eq!(last.status, Some(Status::CANCEL));
    assert_eq!(last.completed, Some(1));
    assoc.release().unwrap();
}

#[test]
fn release_collision_resolves_on_both_sides() {
    // Both sides ask to release at the same moment (PS3.8 9.2.1).
    for _ in 0..5 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let barrier = Arc::new(Barrier::new(2));
        let b = Arc::clone(&barrier);
        let acceptor = thread::spawn(move || {
            let (stream, _) = listener.accept().unwrap();
            let mut conn = Connection::new(Box::new(stream), timeouts(), 0);
            let rq = conn.read_request().unwrap();
            let acceptance = Acceptance::by_abstract_syntax(&rq.contexts, |_| {
                ContextDecision::Accept(TransferSyntaxes::new(&[IMPLICIT], false))
            });
            let mut assoc = conn.accept(&rq, &acceptance).unwrap();
            b.wait();
            assoc.release()
        });
        let p = Proposal::new("A", "B").with_context(VERIFICATION, &[IMPLICIT]);
        let mut assoc = connect(addr, &p, timeouts()).unwrap();
        barrier.wait();
        let mine = assoc.release();
        let theirs = acceptor.join().unwrap();
        assert!(mine.is_ok(), "requestor: {mine:?}");
        assert!(theirs.is_ok(), "acceptor: {theirs:?}");
    }
}

#[test]
fn peer_abort_and_idle_timeout() {
    let (server, _) = start(test_config());
    let addr = server.local_addr();
    // We abort: the server frees the association.
    let mut assoc = associate(addr);
    assoc.abort(Abort::user());
    eventually("the server frees an aborted association", || {
        server.load().established == 0
    });
    // We go silent: after its idle timeout the server aborts (provider) and frees it.
    let p = proposal("DUCKPACS");
    let mut assoc = connect(
        addr,
        &p,
        Timeouts {
            artim: Duration::from_secs(1),
            idle: Some(Duration::from_secs(30)),
        },
    )
    .unwrap();
    let e = assoc.receive().unwrap_err();
    assert!(
        matches!(e, Error::Aborted(a) if a.source == Abort::SOURCE_PROVIDER),
        "{e}"
    );
    eventually("the server frees an idle association", || {
        server.load().established == 0
    });
}

#[test]
fn association_limit_rejects_transiently() {
    let (server, _) = start(ServerConfig {
        max_associations: 1,
        ..test_config()
    });
    let addr = server.local_addr();
    let mut first = associate(addr);
    let e = connect(addr, &proposal("DUCKPACS"), timeouts()).unwrap_err();
    assert!(
        matches!(e, Error::Rejected(r) if r == Rejection::local_limit_exceeded()),
        "{e}"
    );
    first.release().unwrap();
    eventually("the slot is free again", || server.load().established == 0);
    let mut again = associate(addr);
    assert_eq!(again.echo().unwrap(), Status::SUCCESS);
    again.release().unwrap();
}

#[test]
fn two_hundred_silent_connections_do_not_lock_out_a_peer() {
    let (server, _) = start(ServerConfig {
        timeouts: Timeouts {
            artim: Duration::from_secs(3),
            idle: Some(Duration::from_secs(3)),
        },
        max_pending: 300,
        thread_stack: 128 * 1024,
        ..test_config()
    });
    let addr = server.local_addr();
    let before = rss_kib();
    let silent: Vec<TcpStream> = (0..200)
        .map(|_| TcpStream::connect(addr).unwrap())
        .collect();
    eventually("all 200 are admitted", || server.load().pending >= 200);
    // 200 threads with 128 KiB stacks, of which only touched pages count. Other tests run
    // in this process meanwhile, so the bound is loose; the figure is printed.
    let grown = rss_kib().saturating_sub(before);
    eprintln!("200 silent connections: resident memory grew by {grown} KiB");
    assert!(grown < 64 * 1024, "{grown} KiB");
    let mut assoc = associate(addr);
    assert_eq!(assoc.echo().unwrap(), Status::SUCCESS);
    assoc.release().unwrap();
    // ARTIM frees them: each sees the server close its connection.
    for mut s in silent {
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut buf = [0u8; 16];
        assert!(matches!(s.read(&mut buf), Ok(0) | Err(_)));
    }
    eventually("no connection is left", || {
        server.load() == duckpacs_core::net::Load::default()
    });
}

/// Resident memory of this process (Linux), 0 elsewhere.
fn rss_kib() -> usize {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

#[test]
fn over_max_pending_connections_are_closed_at_once() {
    let (server, _) = start(ServerConfig {
        max_pending: 2,
        ..test_config()
    });
    let addr = server.local_addr();
    let _a = TcpStream::connect(addr).unwrap();
    let _b = TcpStream::connect(addr).unwrap();
    eventually("two pending", || server.load().pending == 2);
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 1];
    assert!(matches!(c.read(&mut buf), Ok(0) | Err(_)));
}

/// Send raw bytes to a fresh connection and read what comes back until the server closes.
fn raw_exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// A-ABORT from the service provider with this reason.
fn provider_abort(reason: u8) -> Vec<u8> {
    vec![0x07, 0, 0, 0, 0, 4, 0, 0, 2, reason]
}

#[test]
fn hostile_bytes_before_association_get_an_abort() {
    let (server, _) = start(test_config());
    let addr = server.local_addr();
    // Garbage: 'G' (0x47) is no PDU type.
    let reply = raw_exchange(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert_eq!(reply, provider_abort(Abort::UNRECOGNIZED_PDU));
    // An A-ASSOCIATE-RQ claiming 4 GiB: refused from the header, nothing allocated.
    let reply = raw_exchange(addr, &[0x01, 0, 0xFF, 0xFF, 0xFF, 0xFF, 0, 1]);
    assert_eq!(reply, provider_abort(Abort::INVALID_PARAMETER));
    // A well-framed A-ASSOCIATE-RQ whose body is too short for its fixed fields.
    let reply = raw_exchange(addr, &[0x01, 0, 0, 0, 0, 8, 0, 1, 0, 0, 1, 2, 3, 4]);
    assert_eq!(reply, provider_abort(Abort::INVALID_PARAMETER));
    // A P-DATA-TF before any association: unexpected PDU.
    let reply = raw_exchange(addr, &[0x04, 0, 0, 0, 0, 6, 0, 0, 0, 2, 1, 3]);
    assert_eq!(reply, provider_abort(Abort::UNEXPECTED_PDU));
    // Still serving.
    let mut assoc = associate(addr);
    assert_eq!(assoc.echo().unwrap(), Status::SUCCESS);
    assoc.release().unwrap();
}

/// A raw peer that negotiated with the server: the socket and the accepted CT context.
fn raw_association(addr: SocketAddr) -> (TcpStream, u8) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let rq = proposal("DUCKPACS").request().unwrap();
    s.write_all(&Pdu::AssociateRq(rq).to_bytes().unwrap())
        .unwrap();
    let mut head = [0u8; 6];
    s.read_exact(&mut head).unwrap();
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).unwrap();
    let Pdu::AssociateAc(ac) = pdu::decode_body(head[0], &body).unwrap() else {
        panic!("not accepted")
    };
    let ct = ac.contexts.iter().find(|c| c.id == 3).unwrap();
    assert_eq!(ct.result, pdu::ContextResult::Acceptance);
    (s, 3)
}

fn read_rest(mut s: TcpStream) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn absurd_pdata_length_on_an_association_gets_an_abort() {
    let (server, stores) = start(test_config());
    let (mut s, _) = raw_association(server.local_addr());
    s.write_all(&[0x04, 0, 0xFF, 0xFF, 0xFF, 0xFF]).unwrap();
    assert_eq!(read_rest(s), provider_abort(Abort::INVALID_PARAMETER));
    // Over our 16 KiB maximum by one byte.
    let (mut s, _) = raw_association(server.local_addr());
    s.write_all(&[0x04, 0, 0, 0, 0x40, 0x01]).unwrap();
    assert_eq!(read_rest(s), provider_abort(Abort::INVALID_PARAMETER));
    assert!(stores.lock().unwrap().completed.is_empty());
}

#[test]
fn truncated_dataset_is_never_delivered_as_complete() {
    let (server, stores) = start(test_config());
    let addr = server.local_addr();
    let command = Command::c_store_rq(1, CT, "1.2.3.77", priority::MEDIUM)
        .to_bytes()
        .unwrap();
    let message = |more: &[u8]| {
        let mut m = Vec::new();
        m.extend_from_slice(&pdu::pdata_header(command.len(), 3, true, true));
        m.extend_from_slice(&command);
        m.extend_from_slice(&pdu::pdata_header(1000, 3, false, false));
        m.extend_from_slice(&[5u8; 1000]);
        m.extend_from_slice(more);
        m
    };
    // 1. A new command where the dataset's next fragment should be: abort.
    let (mut s, _) = raw_association(addr);
    let mut next_command = pdu::pdata_header(command.len(), 3, true, true).to_vec();
    next_command.extend_from_slice(&command);
    s.write_all(&message(&next_command)).unwrap();
    assert_eq!(read_rest(s), provider_abort(Abort::NOT_SPECIFIED));
    // 2. A PDU cut in the middle, then the connection closes.
    let (mut s, _) = raw_association(addr);
    let cut = pdu::pdata_header(1000, 3, false, true);
    let mut m = message(&cut);
    m.extend_from_slice(&[5u8; 10]);
    s.write_all(&m).unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let _ = read_rest(s);
    // 3. The peer stops sending in the middle: the idle timer ends it.
    let (mut s, _) = raw_association(addr);
    s.write_all(&message(&[])).unwrap();
    assert_eq!(read_rest(s), provider_abort(Abort::NOT_SPECIFIED));
    eventually("three unfinished datasets dropped", || {
        stores.lock().unwrap().discarded == 3
    });
    assert!(stores.lock().unwrap().completed.is_empty());
    eventually("associations freed", || server.load().established == 0);
}

#[test]
fn shutdown_aborts_what_outlives_the_grace_period() {
    let (server, _) = start(ServerConfig {
        timeouts: Timeouts {
            artim: Duration::from_secs(1),
            idle: Some(Duration::from_secs(60)),
        },
        ..test_config()
    });
    let mut assoc = connect(
        server.local_addr(),
        &proposal("DUCKPACS"),
        Timeouts {
            artim: Duration::from_secs(1),
            idle: Some(Duration::from_secs(30)),
        },
    )
    .unwrap();
    assert_eq!(assoc.echo().unwrap(), Status::SUCCESS);
    let t = thread::spawn(move || server.shutdown(Duration::from_millis(200)));
    let e = assoc.receive().unwrap_err();
    assert!(
        matches!(e, Error::Aborted(a) if a.source == Abort::SOURCE_USER),
        "{e}"
    );
    t.join().unwrap();
}

#[test]
fn unknown_requests_get_unrecognized_operation() {
    let (server, _) = start(test_config());
    let mut assoc = associate(server.local_addr());
    let id = assoc.next_message_id();
    // An N-GET on the Verification context: no service routes it.
    let rq = Command::n_get_rq(id, VERIFICATION, "1.2.3");
    assoc.send(1, &rq, None).unwrap();
    let Reply::Response(rsp) = assoc.next_reply(id).unwrap() else {
        panic!("expected a response")
    };
    assert_eq!(rsp.field, CommandField::N_GET_RSP);
    assert_eq!(rsp.status, Some(Status::UNRECOGNIZED_OPERATION));
    assoc.release().unwrap();
}

#[test]
fn received_after_release_by_peer() {
    // The acceptor sees the requestor's release as Received::Released.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut conn = Connection::new(Box::new(stream), timeouts(), 0);
        let rq = conn.read_request().unwrap();
        let acceptance = Acceptance::by_abstract_syntax(&rq.contexts, |_| {
            ContextDecision::Accept(TransferSyntaxes::new(&[IMPLICIT], false))
        });
        let mut assoc = conn.accept(&rq, &acceptance).unwrap();
        let first = assoc.receive().unwrap();
        let second = assoc.receive().unwrap();
        (first, second)
    });
    let p = Proposal::new("A", "B").with_context(VERIFICATION, &[IMPLICIT]);
    let mut assoc = connect(addr, &p, timeouts()).unwrap();
    assoc.send(1, &Command::c_echo_rq(1), None).unwrap();
    assoc.release().unwrap();
    let (first, second) = acceptor.join().unwrap();
    assert!(matches!(first, Received::Command { context_id: 1, .. }));
    assert_eq!(second, Received::Released);
}

#[test]
fn dcmtk_echoscu_interop() {
    let echoscu = std::path::Path::new("/usr/bin/echoscu");
    if !echoscu.exists() {
        eprintln!("skipped: /usr/bin/echoscu (DCMTK) is not installed");
        return;
    }
    let (server, _) = start(test_config());
    let port = server.local_addr().port().to_string();
    let out = std::process::Command::new(echoscu)
        .args([
            "-aet",
            "ECHOSCU",
            "-aec",
            "DUCKPACS",
            "-to",
            "5",
            "127.0.0.1",
            &port,
        ])
        .env("TCP_NODELAY", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "echoscu: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // A wrong called AE title: echoscu reports the rejection and fails.
    let out = std::process::Command::new(echoscu)
        .args([
            "-aet",
            "ECHOSCU",
            "-aec",
            "WRONG",
            "-to",
            "5",
            "127.0.0.1",
            &port,
        ])
        .env("TCP_NODELAY", "1")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stderr).to_lowercase()
        + &String::from_utf8_lossy(&out.stdout).to_lowercase();
    assert!(text.contains("called ae title not recognized"), "{text}");
}

/// Read one whole PDU from a raw socket.
fn read_pdu_raw(s: &mut TcpStream) -> Vec<u8> {
    let mut head = [0u8; 6];
    s.read_exact(&mut head).unwrap();
    let len = u32::from_be_bytes([head[2], head[3], head[4], head[5]]) as usize;
    let mut pdu = head.to_vec();
    pdu.resize(6 + len, 0);
    s.read_exact(&mut pdu[6..]).unwrap();
    pdu
}

const RELEASE_RQ: [u8; 10] = [0x05, 0, 0, 0, 0, 4, 0, 0, 0, 0];
const RELEASE_RP: [u8; 10] = [0x06, 0, 0, 0, 0, 4, 0, 0, 0, 0];

#[test]
fn release_collision_as_acceptor_follows_the_state_table() {
    // We accept; a raw requestor answers our A-RELEASE-RQ with its own (collision). As
    // acceptor (Sta10) we must wait for its A-RELEASE-RP before sending ours (Sta12).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let acceptor = thread::spawn(move || {
        let (stream, _) = listener.accept().unwrap();
        let mut conn = Connection::new(Box::new(stream), timeouts(), 0);
        let rq = conn.read_request().unwrap();
        let acceptance = Acceptance::by_abstract_syntax(&rq.contexts, |_| {
            ContextDecision::Accept(TransferSyntaxes::new(&[IMPLICIT], false))
        });
        let mut assoc = conn.accept(&rq, &acceptance).unwrap();
        assoc.release()
    });
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let rq = Proposal::new("A", "B")
        .with_context(VERIFICATION, &[IMPLICIT])
        .request()
        .unwrap();
    s.write_all(&Pdu::AssociateRq(rq).to_bytes().unwrap())
        .unwrap();
    assert_eq!(read_pdu_raw(&mut s)[0], 0x02, "A-ASSOCIATE-AC");
    assert_eq!(read_pdu_raw(&mut s), RELEASE_RQ);
    s.write_all(&RELEASE_RQ).unwrap(); // collision
    s.write_all(&RELEASE_RP).unwrap(); // the requestor answers first (Sta9 -> Sta11)
    assert_eq!(
        read_pdu_raw(&mut s),
        RELEASE_RP,
        "then the acceptor answers"
    );
    assert!(acceptor.join().unwrap().is_ok());
}

#[test]
fn release_collision_as_requestor_follows_the_state_table() {
    // We request; a raw acceptor answers our A-RELEASE-RQ with its own. As requestor
    // (Sta9) we answer at once and then wait for its A-RELEASE-RP (Sta11).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let rq = read_pdu_raw(&mut s);
        let Pdu::AssociateRq(rq) = pdu::decode_body(rq[0], &rq[6..]).unwrap() else {
            panic!()
        };
        let acceptance = Acceptance::by_abstract_syntax(&rq.contexts, |_| {
            ContextDecision::Accept(TransferSyntaxes::new(&[IMPLICIT], false))
        });
        let (ac, _) =
            duckpacs_core::net::assoc::acceptor::negotiate(&rq, &acceptance, 0, None).unwrap();
        s.write_all(&Pdu::AssociateAc(ac).to_bytes().unwrap())
            .unwrap();
        assert_eq!(read_pdu_raw(&mut s), RELEASE_RQ);
        s.write_all(&RELEASE_RQ).unwrap(); // collision
        assert_eq!(
            read_pdu_raw(&mut s),
            RELEASE_RP,
            "the requestor answers at once"
        );
        s.write_all(&RELEASE_RP).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
        rest
    });
    let p = Proposal::new("A", "B").with_context(VERIFICATION, &[IMPLICIT]);
    let mut assoc = connect(addr, &p, timeouts()).unwrap();
    assoc.release().unwrap();
    assert!(peer.join().unwrap().is_empty(), "nothing after the release");
}

#[test]
fn release_without_answer_aborts_after_artim() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let peer = thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let rq = read_pdu_raw(&mut s);
        let Pdu::AssociateRq(rq) = pdu::decode_body(rq[0], &rq[6..]).unwrap() else {
            panic!()
        };
        let acceptance = Acceptance::by_abstract_syntax(&rq.contexts, |_| {
            ContextDecision::Accept(TransferSyntaxes::new(&[IMPLICIT], false))
        });
        let (ac, _) =
            duckpacs_core::net::assoc::acceptor::negotiate(&rq, &acceptance, 0, None).unwrap();
        s.write_all(&Pdu::AssociateAc(ac).to_bytes().unwrap())
            .unwrap();
        assert_eq!(read_pdu_raw(&mut s), RELEASE_RQ);
        // Never answer: the requestor's ARTIM runs out and it aborts.
        read_pdu_raw(&mut s)
    });
    let p = Proposal::new("A", "B").with_context(VERIFICATION, &[IMPLICIT]);
    let mut assoc = connect(addr, &p, timeouts()).unwrap();
    let e = assoc.release().unwrap_err();
    assert!(matches!(e, Error::Timeout { .. }), "{e}");
    assert_eq!(peer.join().unwrap(), provider_abort(Abort::NOT_SPECIFIED));
}

/// An explicit VR little endian element (2-byte length VRs only).
fn explicit(tag: u32, vr: &[u8; 2], value: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&((tag >> 16) as u16).to_le_bytes());
    v.extend_from_slice(&(tag as u16).to_le_bytes());
    v.extend_from_slice(vr);
    if matches!(vr, b"OB" | b"OW" | b"UN") {
        v.extend_from_slice(&[0, 0]);
        v.extend_from_slice(&(value.len() as u32).to_le_bytes());
    } else {
        v.extend_from_slice(&(value.len() as u16).to_le_bytes());
    }
    v.extend_from_slice(value);
    v
}

/// A small CT instance as a Part 10 file (explicit VR little endian) and its dataset.
fn part10_ct(instance: &str) -> (Vec<u8>, Vec<u8>) {
    let pad = |s: &str| {
        let mut b = s.as_bytes().to_vec();
        if b.len() % 2 == 1 {
            b.push(0);
        }
        b
    };
    let meta_rest = [
        explicit(0x0002_0001, b"OB", &[0, 1]),
        explicit(0x0002_0002, b"UI", &pad(CT)),
        explicit(0x0002_0003, b"UI", &pad(instance)),
        explicit(0x0002_0010, b"UI", &pad(EXPLICIT)),
        explicit(0x0002_0012, b"UI", &pad("1.2.3.4")),
    ]
    .concat();
    let dataset = [
        explicit(0x0008_0016, b"UI", &pad(CT)),
        explicit(0x0008_0018, b"UI", &pad(instance)),
        explicit(0x0008_0060, b"CS", b"CT"),
        explicit(0x0010_0010, b"PN", b"Doe^John"),
        explicit(0x0042_0011, b"OB", &vec![0x5A; 100_000]),
    ]
    .concat();
    let mut file = vec![0u8; 128];
    file.extend_from_slice(b"DICM");
    file.extend(explicit(
        0x0002_0000,
        b"UL",
        &(meta_rest.len() as u32).to_le_bytes(),
    ));
    file.extend_from_slice(&meta_rest);
    file.extend_from_slice(&dataset);
    (file, dataset)
}

#[test]
fn dcmtk_storescu_interop() {
    let storescu = std::path::Path::new("/usr/bin/storescu");
    if !storescu.exists() {
        eprintln!("skipped: /usr/bin/storescu (DCMTK) is not installed");
        return;
    }
    let (server, stores) = start(test_config());
    let dir = tempfile::tempdir().unwrap();
    let mut expected = Vec::new();
    let mut files = Vec::new();
    for i in 1..=3 {
        let uid = format!("1.2.3.4.5.6.{i}");
        let (file, dataset) = part10_ct(&uid);
        let path = dir.path().join(format!("ct{i}.dcm"));
        std::fs::write(&path, file).unwrap();
        files.push(path);
        expected.push((uid, dataset));
    }
    let port = server.local_addr().port().to_string();
    let out = std::process::Command::new(storescu)
        .args([
            "-aet",
            "STORESCU",
            "-aec",
            "DUCKPACS",
            "-to",
            "5",
            "127.0.0.1",
            &port,
        ])
        .args(&files)
        .env("TCP_NODELAY", "1")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "storescu: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eventually("the association ends", || server.load().established == 0);
    let s = stores.lock().unwrap();
    assert_eq!(s.completed, expected, "byte for byte, in order");
}

#[test]
fn dcmtk_getscu_interop() {
    let getscu = std::path::Path::new("/usr/bin/getscu");
    if !getscu.exists() {
        eprintln!("skipped: /usr/bin/getscu (DCMTK) is not installed");
        return;
    }
    let (server, _) = start(test_config());
    let dir = tempfile::tempdir().unwrap();
    let port = server.local_addr().port().to_string();
    let out = std::process::Command::new(getscu)
        .args(["-aet", "GETSCU", "-aec", "DUCKPACS", "-to", "5", "-S"])
        .args([
            "-k",
            "QueryRetrieveLevel=STUDY",
            "-k",
            "StudyInstanceUID=1.2.3",
        ])
        .arg("-od")
        .arg(dir.path())
        .args(["127.0.0.1", &port])
        .env("TCP_NODELAY", "1")
        .output()
        .unwrap();
    let log =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "getscu: {log}");
    // getscu stored the C-STORE sub-operation it received on the C-GET association.
    let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert_eq!(files.len(), 1, "{log}");
    let stored = std::fs::read(files[0].path()).unwrap();
    assert!(stored.ends_with(&part10_ct("1.2.3.9").1), "{log}");
}

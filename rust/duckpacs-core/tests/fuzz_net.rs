//! Robustness of the network decoders: mutated PDUs, mutated DIMSE command sets, and
//! mutated whole byte streams fed to an acceptor over an in-memory transport must give
//! `Ok` or `Err`, never a panic, a hang or an allocation out of proportion to the input
//! (an absurd length field must not allocate what it claims).
//!
//! A fast subset runs in plain `cargo test`; `make fuzz` runs the full set (>= 100,000
//! variants of each kind) with `cargo test --release --test fuzz_net -- --ignored`.
//! `DUCKPACS_FUZZ_CASES` overrides the count. The generator is seeded, so a failing case
//! number replays.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{self, Cursor, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use duckpacs_core::net::dimse::{priority, LimitedVec};
use duckpacs_core::net::pdu::{self, Abort, Limits, Pdu, Pdv, Rejection};
use duckpacs_core::net::{
    Acceptance, Command, Connection, ContextDecision, Proposal, Received, Status, Timeouts,
    TransferSyntaxes, Transport,
};

struct Counting;

static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = CURRENT.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// xorshift64*: deterministic, so a failing case can be replayed from its number.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

const VERIFICATION: &str = "1.2.840.10008.1.1";
const CT: &str = "1.2.840.10008.5.1.4.1.1.2";
const FIND: &str = "1.2.840.10008.5.1.4.1.2.2.1";
const IMPLICIT: &str = "1.2.840.10008.1.2";
const EXPLICIT: &str = "1.2.840.10008.1.2.1";
const MAX_PDU: u32 = 16_384;

fn proposal() -> Proposal {
    Proposal::new("FUZZER", "DUCKPACS")
        .with_context(VERIFICATION, &[IMPLICIT])
        .with_context(CT, &[EXPLICIT, IMPLICIT, "1.2.840.10008.1.2.4.70"])
        .with_context(FIND, &[IMPLICIT])
        .with_role(CT, true, true)
}

fn accept_all(rq: &pdu::AssociateRq) -> Acceptance {
    let mut a = Acceptance::by_abstract_syntax(&rq.contexts, |_| {
        ContextDecision::Accept(TransferSyntaxes::new(&[EXPLICIT, IMPLICIT], true))
    });
    a.roles = rq.user.roles.clone();
    a
}

fn command_seeds() -> Vec<Vec<u8>> {
    let store = Command::c_store_rq(3, CT, "1.2.3.4.5", priority::HIGH);
    let mut find_rsp = Command::c_find_rq(4, FIND, priority::LOW).response(Status::PENDING);
    find_rsp.has_dataset = true;
    let mut failed = store
        .response(Status::CANNOT_UNDERSTAND)
        .with_error_comment("broken");
    failed.offending_elements = vec![0x0010_0010, 0x0020_000D];
    let move_rsp = Command::c_move_rq(5, FIND, 0, "DEST")
        .response(Status::PENDING)
        .with_sub_operations(duckpacs_core::net::dimse::SubOperations {
            remaining: Some(4),
            completed: 3,
            failed: 2,
            warning: 1,
        });
    [
        Command::c_echo_rq(1),
        Command::c_echo_rq(1).response(Status::SUCCESS),
        store,
        failed,
        Command::c_find_rq(4, FIND, priority::LOW),
        find_rsp,
        Command::c_get_rq(6, FIND, 0),
        Command::c_move_rq(5, FIND, 0, "DEST"),
        move_rsp,
        Command::c_cancel_rq(4),
        Command::n_action_rq(7, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 1),
        Command::n_event_report_rq(8, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 2),
        Command::n_create_rq(9, "1.2.840.10008.3.1.2.3.3", None),
        Command::n_set_rq(10, "1.2.840.10008.3.1.2.3.3", "1.2.3"),
    ]
    .iter()
    .map(|c| c.to_bytes().unwrap())
    .collect()
}

fn pdu_seeds() -> Vec<Vec<u8>> {
    let p = proposal();
    let rq = p.request().unwrap();
    let (ac, _) =
        duckpacs_core::net::assoc::acceptor::negotiate(&rq, &accept_all(&rq), MAX_PDU, None)
            .unwrap();
    let command = Command::c_echo_rq(1).to_bytes().unwrap();
    let pdata = Pdu::PData(vec![
        Pdv {
            context_id: 1,
            is_command: true,
            is_last: true,
            data: &command,
        },
        Pdv {
            context_id: 3,
            is_command: false,
            is_last: false,
            data: &[1, 2, 3, 4, 5, 6, 7, 8],
        },
    ]);
    [
        Pdu::AssociateRq(rq),
        Pdu::AssociateAc(ac),
        Pdu::AssociateRj(Rejection::called_ae_not_recognized()),
        pdata,
        Pdu::ReleaseRq,
        Pdu::ReleaseRp,
        Pdu::Abort(Abort::provider(Abort::UNEXPECTED_PDU)),
    ]
    .iter()
    .map(|p| p.to_bytes().unwrap())
    .collect()
}

/// P-DATA-TF PDUs carrying one message, dataset cut to `max` bytes per fragment.
fn message(out: &mut Vec<u8>, ctx: u8, command: &Command, dataset: &[u8], max: usize) {
    let c = command.to_bytes().unwrap();
    out.extend_from_slice(&pdu::pdata_header(c.len(), ctx, true, true));
    out.extend_from_slice(&c);
    if !command.has_dataset {
        return;
    }
    let mut chunks: Vec<&[u8]> = dataset.chunks(max).collect();
    if chunks.is_empty() {
        chunks.push(&[]);
    }
    let n = chunks.len();
    for (i, chunk) in chunks.into_iter().enumerate() {
        out.extend_from_slice(&pdu::pdata_header(chunk.len(), ctx, false, i + 1 == n));
        out.extend_from_slice(chunk);
    }
}

/// Whole acceptor-side byte streams: A-ASSOCIATE-RQ, messages, A-RELEASE-RQ.
fn stream_seeds() -> Vec<Vec<u8>> {
    let rq = Pdu::AssociateRq(proposal().request().unwrap())
        .to_bytes()
        .unwrap();
    let mut a = rq.clone();
    message(&mut a, 1, &Command::c_echo_rq(1), &[], 1000);
    let instance: Vec<u8> = (0..40_000u32).map(|i| i as u8).collect();
    message(
        &mut a,
        3,
        &Command::c_store_rq(2, CT, "1.2.3", priority::MEDIUM),
        &instance,
        MAX_PDU as usize - 6,
    );
    message(
        &mut a,
        5,
        &Command::c_find_rq(3, FIND, priority::MEDIUM),
        &[0x10, 0, 0x10, 0, 0, 0, 0, 0],
        4,
    );
    message(&mut a, 5, &Command::c_cancel_rq(3), &[], 100);
    a.extend_from_slice(&Pdu::ReleaseRq.to_bytes().unwrap());
    let mut b = rq;
    message(&mut b, 3, &Command::c_store_rq(9, CT, "1.2.9", 0), &[], 100);
    message(&mut b, 1, &Command::c_echo_rq(10), &[], 100);
    vec![a, b]
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut v = seed.to_vec();
    for _ in 0..1 + rng.below(3) {
        if v.is_empty() {
            break;
        }
        match rng.below(6) {
            0 => v.truncate(rng.below(v.len() + 1)),
            1 => {
                for _ in 0..1 + rng.below(8) {
                    let i = rng.below(v.len());
                    v[i] ^= 1 << rng.below(8);
                }
            }
            2 | 3 => {
                // A length-like field: 2 or 4 bytes, big or little endian, interesting value.
                let width = if rng.below(2) == 0 { 2 } else { 4 };
                let value: u32 = match rng.below(6) {
                    0 => 0xFFFF_FFFF,
                    1 => 0,
                    2 => rng.next() as u32,
                    3 => (rng.below(64) as u32).wrapping_sub(32),
                    4 => 0x7FFF_FFFF,
                    _ => 0xFFFF_FFF0 + rng.below(16) as u32,
                };
                let at = if rng.below(4) == 0 {
                    2
                } else {
                    rng.below(v.len())
                };
                let bytes = if rng.below(2) == 0 {
                    value.to_be_bytes()
                } else {
                    value.to_le_bytes()
                };
                let bytes = if width == 2 { &bytes[2..] } else { &bytes[..] };
                for (k, byte) in bytes.iter().enumerate() {
                    if let Some(b) = v.get_mut(at + k) {
                        *b = *byte;
                    }
                }
            }
            4 => {
                let i = rng.below(v.len());
                v[i] = [
                    0x00, 0x01, 0x02, 0x04, 0x07, 0x10, 0x20, 0x50, 0x7F, 0x80, 0xFF,
                ][rng.below(11)];
            }
            _ => {
                let a = rng.below(v.len());
                let b = (a + rng.below(64)).min(v.len());
                if rng.below(2) == 0 {
                    let chunk: Vec<u8> = v[a..b].to_vec();
                    v.splice(a..a, chunk);
                } else {
                    v.drain(a..b);
                }
            }
        }
    }
    v
}

/// Run `f` on `data`, checking time and the memory allocated meanwhile.
fn bounded(kind: &str, case: usize, data: &[u8], f: impl FnOnce(&[u8])) {
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = Instant::now();
    f(data);
    let elapsed = start.elapsed();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    let limit = 8 * data.len() + (1 << 20);
    assert!(
        peak <= limit,
        "{kind} case {case}: peak {peak} bytes for {} input bytes",
        data.len()
    );
    assert!(
        elapsed < Duration::from_secs(5),
        "{kind} case {case}: took {elapsed:?}"
    );
}

fn check_pdu(data: &[u8]) {
    if let Ok((p, used)) = pdu::decode(data, Limits::new(MAX_PDU)) {
        assert!(used <= data.len());
        // What decodes and re-encodes decodes to the same thing.
        if let Ok(bytes) = p.to_bytes() {
            let (again, _) = pdu::decode(&bytes, Limits::new(u32::MAX)).unwrap();
            assert_eq!(again, p);
        }
    }
}

fn check_command(data: &[u8]) {
    if let Ok(c) = Command::decode(data) {
        if let Ok(bytes) = c.to_bytes() {
            assert_eq!(Command::decode(&bytes).unwrap(), c);
        }
        let _ = c.response(Status::SUCCESS).to_bytes();
    }
}

/// An in-memory transport: reads the input, swallows the output.
struct Mem(Cursor<Vec<u8>>);

impl Read for Mem {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Mem {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Transport for Mem {
    fn set_read_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn set_write_timeout(&mut self, _: Option<Duration>) -> io::Result<()> {
        Ok(())
    }
    fn set_nonblocking(&mut self, _: bool) -> io::Result<()> {
        Ok(())
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn close(&mut self) -> io::Result<()> {
        Ok(())
    }
    fn peer_addr(&self) -> Option<SocketAddr> {
        None
    }
}

/// The acceptor side over a byte stream: negotiate, then serve until it ends.
fn check_stream(data: &[u8]) {
    let timeouts = Timeouts {
        artim: Duration::from_secs(5),
        idle: Some(Duration::from_secs(5)),
    };
    let mut conn = Connection::new(Box::new(Mem(Cursor::new(data.to_vec()))), timeouts, MAX_PDU);
    let Ok(rq) = conn.read_request() else {
        return;
    };
    let Ok(mut assoc) = conn.accept(&rq, &accept_all(&rq)) else {
        return;
    };
    for _ in 0..10_000 {
        match assoc.receive() {
            Ok(Received::Command {
                context_id,
                command,
            }) => {
                if assoc.dataset_pending() {
                    let mut sink = LimitedVec::new(64 * 1024);
                    if assoc.receive_dataset(&mut sink).is_err() && !assoc.is_open() {
                        return;
                    }
                }
                if !command.field.is_response() {
                    let _ = assoc.send(context_id, &command.response(Status::SUCCESS), None);
                }
            }
            Ok(Received::Released) | Err(_) => return,
        }
        if !assoc.is_open() {
            return;
        }
    }
    panic!("10,000 messages from {} bytes", data.len());
}

/// A decoder under test: its name, its seeds, and the check run on each variant.
type Kind = (&'static str, Vec<Vec<u8>>, fn(&[u8]));

fn run(cases: usize) {
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let kinds: [Kind; 3] = [
        ("pdu", pdu_seeds(), check_pdu),
        ("command", command_seeds(), check_command),
        ("stream", stream_seeds(), check_stream),
    ];
    for (kind, seeds, check) in &kinds {
        for seed in seeds {
            bounded(kind, usize::MAX, seed, check);
        }
        for case in 0..cases {
            let seed = &seeds[case % seeds.len()];
            let mut variant = mutate(seed, &mut rng);
            if rng.below(8) == 0 {
                // Splice two seeds: a valid start followed by another kind of bytes.
                let other = &seeds[rng.below(seeds.len())];
                variant.extend_from_slice(&other[rng.below(other.len())..]);
            }
            bounded(kind, case, &variant, check);
        }
        eprintln!(
            "fuzz_net: {cases} {kind} variants of {} seeds, no panic",
            seeds.len()
        );
    }
}

fn cases(default: usize) -> usize {
    std::env::var("DUCKPACS_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn fuzz_net_fast_subset() {
    run(cases(3_000));
}

#[test]
#[ignore = "long: run with `make fuzz` (cargo test --release --test fuzz_net -- --ignored)"]
fn fuzz_net_full_100k() {
    run(cases(100_000).max(100_000));
}

//! The acceptor's listener: blocking `std::net` sockets, one thread per connection (small
//! stacks), two separate bounds:
//!
//! - connections that have not finished negotiating ([`ServerConfig::max_pending`]); each
//!   is freed by ARTIM if it stays silent, and past the bound new connections are closed at
//!   once, so idle sockets cannot starve real peers for long;
//! - established associations ([`ServerConfig::max_associations`]); past it a request gets
//!   A-ASSOCIATE-RJ rejected-transient, service-provider (presentation), reason 2 local
//!   limit exceeded (PS3.8 9.3.4), before the policy is asked.
//!
//! [`Server::shutdown`] stops accepting, closes connections still negotiating, gives
//! established associations a grace period and then aborts them.

use std::collections::HashMap;
use std::io;
use std::net::{
    IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs,
};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use super::assoc::acceptor::check_request;
use super::assoc::DEFAULT_MAX_PDU;
use super::association::{Association, Connection, Received, Timeouts};
use super::error::Error;
use super::pdu::{Abort, Rejection};
use super::service::{Accepted, AssociationRequest, Policy, Service};
use super::tls::{TlsSession, TlsStream};
use super::transport::{SharedTcp, Transport};

/// Listener settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerConfig {
    /// Our Maximum Length (PS3.8 D.1; 0 = no limit, still capped at 16 MiB per PDU).
    pub max_pdu: u32,
    /// Established associations served at once.
    pub max_associations: usize,
    /// Connections still negotiating at once (each costs a thread and a socket).
    pub max_pending: usize,
    pub timeouts: Timeouts,
    /// Stack of each connection thread. Only touched pages cost memory; 512 KiB leaves
    /// room for a policy that calls into an interpreter.
    pub thread_stack: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            max_pdu: DEFAULT_MAX_PDU,
            max_associations: 32,
            max_pending: 512,
            timeouts: Timeouts::default(),
            thread_stack: 512 * 1024,
        }
    }
}

/// How many connections a server holds right now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Load {
    pub pending: usize,
    pub established: usize,
}

/// Sockets of live connections, so that shutdown can close them.
#[derive(Default)]
struct Registry {
    pending: HashMap<u64, Arc<TcpStream>>,
    established: HashMap<u64, Arc<TcpStream>>,
}

struct Shared {
    config: ServerConfig,
    policy: Arc<dyn Policy>,
    /// Set on a TLS listener (PS3.15 B.1, B.9): each connection starts with a handshake.
    tls: Option<Arc<rustls::ServerConfig>>,
    stop: AtomicBool,
    /// Set when established associations are to be aborted.
    interrupt: Arc<AtomicBool>,
    registry: Mutex<Registry>,
    changed: Condvar,
    next_id: AtomicU64,
}

impl Shared {
    fn registry(&self) -> MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Move connection `id` from the pending to the established pool if there is room.
    fn take_slot(&self, id: u64) -> bool {
        let mut r = self.registry();
        if r.established.len() >= self.config.max_associations {
            return false;
        }
        if let Some(s) = r.pending.remove(&id) {
            r.established.insert(id, s);
        }
        true
    }

    fn wait_until(&self, deadline: Instant, done: impl Fn(&Registry) -> bool) -> bool {
        let mut r = self.registry();
        loop {
            if done(&r) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            r = self
                .changed
                .wait_timeout(r, deadline - now)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Removes a connection from the registry when its thread ends, however it ends.
struct Slot {
    shared: Arc<Shared>,
    id: u64,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut r = self.shared.registry();
        r.pending.remove(&self.id);
        r.established.remove(&self.id);
        drop(r);
        self.shared.changed.notify_all();
    }
}

/// A running DICOM listener.
pub struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Listen on `addr` and serve associations with `policy`.
    pub fn bind(
        addr: impl ToSocketAddrs,
        config: ServerConfig,
        policy: Arc<dyn Policy>,
    ) -> io::Result<Server> {
        Server::start(TcpListener::bind(addr)?, config, policy)
    }

    /// Serve on a listener the caller bound.
    pub fn start(
        listener: TcpListener,
        config: ServerConfig,
        policy: Arc<dyn Policy>,
    ) -> io::Result<Server> {
        Server::start_with(listener, config, policy, None)
    }

    /// Listen on `addr` for DICOM over TLS: every connection completes a TLS handshake
    /// (within ARTIM) before the association starts.
    pub fn bind_tls(
        addr: impl ToSocketAddrs,
        config: ServerConfig,
        policy: Arc<dyn Policy>,
        tls: Arc<rustls::ServerConfig>,
    ) -> io::Result<Server> {
        Server::start_with(TcpListener::bind(addr)?, config, policy, Some(tls))
    }

    /// Serve on a listener the caller bound, over TLS when `tls` is given.
    pub fn start_with(
        listener: TcpListener,
        config: ServerConfig,
        policy: Arc<dyn Policy>,
        tls: Option<Arc<rustls::ServerConfig>>,
    ) -> io::Result<Server> {
        let addr = listener.local_addr()?;
        let secure = tls.is_some();
        let shared = Arc::new(Shared {
            config,
            policy,
            tls,
            stop: AtomicBool::new(false),
            interrupt: Arc::new(AtomicBool::new(false)),
            registry: Mutex::new(Registry::default()),
            changed: Condvar::new(),
            next_id: AtomicU64::new(1),
        });
        let s = Arc::clone(&shared);
        let acceptor = thread::Builder::new()
            .name("dicom-accept".into())
            .spawn(move || accept_loop(listener, s))?;
        log::info!(
            "DICOM listener on {addr}{}",
            if secure { " (TLS)" } else { "" }
        );
        Ok(Server {
            addr,
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn load(&self) -> Load {
        let r = self.shared.registry();
        Load {
            pending: r.pending.len(),
            established: r.established.len(),
        }
    }

    /// Stop accepting, close connections still negotiating, let established associations
    /// finish for up to `grace`, then abort the rest (A-ABORT, service-user) and wait for
    /// their threads to end.
    pub fn shutdown(mut self, grace: Duration) {
        self.stop(grace);
    }

    fn stop(&mut self, grace: Duration) {
        let Some(acceptor) = self.acceptor.take() else {
            return;
        };
        self.shared.stop.store(true, Ordering::SeqCst);
        // Wake the blocking accept() with a connection of our own.
        let _ = TcpStream::connect_timeout(&wake_addr(self.addr), Duration::from_secs(1));
        let _ = acceptor.join();
        for s in self.shared.registry().pending.values() {
            let _ = s.shutdown(Shutdown::Both);
        }
        let deadline = Instant::now() + grace;
        if !self
            .shared
            .wait_until(deadline, |r| r.established.is_empty())
        {
            self.shared.interrupt.store(true, Ordering::SeqCst);
            // Ending the reads wakes blocked threads; the write half stays for the A-ABORT.
            for s in self.shared.registry().established.values() {
                let _ = s.shutdown(Shutdown::Read);
            }
        }
        let deadline = Instant::now() + Duration::from_secs(3);
        if !self.shared.wait_until(deadline, |r| {
            r.pending.is_empty() && r.established.is_empty()
        }) {
            let r = self.shared.registry();
            for s in r.pending.values().chain(r.established.values()) {
                let _ = s.shutdown(Shutdown::Both);
            }
        }
        log::info!("DICOM listener on {} stopped", self.addr);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop(Duration::ZERO);
    }
}

fn wake_addr(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for conn in listener.incoming() {
        if shared.stop.load(Ordering::SeqCst) {
            break;
        }
        match conn {
            Ok(stream) => admit(&shared, stream),
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                log::warn!("accepting a connection failed: {e}");
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

fn admit(shared: &Arc<Shared>, stream: TcpStream) {
    let peer = stream.peer_addr().ok();
    // Each PDU goes out in one write; never wait for an ACK to send the next.
    let _ = stream.set_nodelay(true);
    let stream = Arc::new(stream);
    let handle = Arc::clone(&stream);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    {
        let mut r = shared.registry();
        if r.pending.len() >= shared.config.max_pending {
            log::warn!(
                "connection from {peer:?} closed: {} connections are still negotiating",
                r.pending.len()
            );
            return;
        }
        r.pending.insert(id, handle);
    }
    let slot = Slot {
        shared: Arc::clone(shared),
        id,
    };
    let spawned = thread::Builder::new()
        .name(format!("dicom-{id}"))
        .stack_size(shared.config.thread_stack)
        .spawn(move || {
            let slot = slot;
            serve(&slot.shared, slot.id, stream, peer);
        });
    if let Err(e) = spawned {
        // The closure (and with it the slot) was dropped: the registry is clean.
        log::warn!("connection from {peer:?} closed: no thread for it: {e}");
    }
}

/// The connection's transport: the TCP stream, or on a TLS listener the stream after a
/// completed handshake (the client's certificate already checked against the CA).
fn secure(
    shared: &Shared,
    stream: Arc<TcpStream>,
    peer: Option<SocketAddr>,
) -> Option<(Box<dyn Transport>, Option<TlsSession>)> {
    let Some(tls) = &shared.tls else {
        return Some((Box::new(SharedTcp(stream)), None));
    };
    let peer = peer.map_or("?".into(), |p| p.to_string());
    match TlsStream::accept(
        Arc::clone(tls),
        SharedTcp(stream),
        shared.config.timeouts.artim,
    ) {
        Ok(s) => {
            let session = s.session();
            log::debug!(
                "TLS session with {peer}: client certificate {:?}",
                session.peer
            );
            Some((Box::new(s), Some(session)))
        }
        Err(e) => {
            log::warn!("connection from {peer} closed: TLS handshake failed: {e}");
            None
        }
    }
}

/// One connection: negotiation, then the association's messages until it ends.
fn serve(shared: &Shared, id: u64, stream: Arc<TcpStream>, peer: Option<SocketAddr>) {
    let config = &shared.config;
    let Some((transport, tls)) = secure(shared, stream, peer) else {
        return;
    };
    let mut conn = Connection::new(transport, config.timeouts, config.max_pdu);
    conn.set_interrupt(Arc::clone(&shared.interrupt));
    let rq = match conn.read_request() {
        Ok(rq) => rq,
        Err(e) => {
            log_pre_association(peer, &e);
            return;
        }
    };
    let who = format!(
        "{} -> {} ({})",
        rq.calling_ae,
        rq.called_ae,
        peer.map_or("?".into(), |p| p.to_string())
    );
    if let Err(r) = check_request(&rq) {
        log::warn!("association {who} rejected: {r}");
        let _ = conn.reject(r);
        return;
    }
    if !shared.take_slot(id) {
        log::warn!(
            "association {who} rejected: {} associations already established",
            config.max_associations
        );
        let _ = conn.reject(Rejection::local_limit_exceeded());
        return;
    }
    let request = AssociationRequest {
        rq: &rq,
        peer_addr: peer,
        tls: tls.as_ref(),
    };
    let Accepted {
        acceptance,
        mut service,
    } = match shared.policy.decide(&request) {
        Ok(accepted) => accepted,
        Err(r) => {
            log::info!("association {who} rejected: {r}");
            let _ = conn.reject(r);
            return;
        }
    };
    let mut assoc = match conn.accept(&rq, &acceptance) {
        Ok(assoc) => assoc,
        Err(e) => {
            log::warn!("association {who}: {e}");
            return;
        }
    };
    assoc.set_interrupt(Arc::clone(&shared.interrupt));
    log::info!(
        "association {who} established: {} of {} presentation contexts accepted",
        assoc.negotiated().contexts.len(),
        rq.contexts.len()
    );
    run(&mut assoc, service.as_mut(), &who);
}

/// The message loop of an established association.
fn run(assoc: &mut Association, service: &mut dyn Service, who: &str) {
    loop {
        let (context_id, command) = match assoc.receive() {
            Ok(Received::Command {
                context_id,
                command,
            }) => (context_id, command),
            Ok(Received::Released) => {
                log::info!("association {who} released");
                return;
            }
            Err(e) => {
                log_association_end(who, &e);
                return;
            }
        };
        let field = command.field;
        match service.handle(assoc, context_id, command) {
            Ok(()) => {}
            Err(e) if e.is_recoverable() && assoc.is_open() => {
                log::warn!("association {who}: {field}: {e}");
            }
            Err(e) => {
                log::warn!("association {who}: {field}: {e}");
                assoc.abort(Abort::provider(Abort::NOT_SPECIFIED));
                return;
            }
        }
        if !assoc.is_open() {
            return;
        }
        if assoc.dataset_pending() {
            log::warn!("association {who}: {field}: the service left its dataset unread");
            if let Err(e) = assoc.skip_dataset() {
                log_association_end(who, &e);
                return;
            }
        }
    }
}

fn log_pre_association(peer: Option<SocketAddr>, e: &Error) {
    let peer = peer.map_or("?".into(), |p| p.to_string());
    match e {
        Error::Timeout { .. } | Error::Closed { .. } | Error::Shutdown => {
            log::info!("connection from {peer} closed before association: {e}");
        }
        _ => log::warn!("connection from {peer}: {e}"),
    }
}

fn log_association_end(who: &str, e: &Error) {
    match e {
        Error::Aborted(_) | Error::Shutdown => log::info!("association {who}: {e}"),
        _ => log::warn!("association {who} ended: {e}"),
    }
}

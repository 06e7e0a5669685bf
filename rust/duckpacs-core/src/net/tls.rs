//! DICOM over TLS (PS3.15 B.1 Basic TLS Secure Transport Connection Profile, B.9
//! Non-Downgrading BCP 195 TLS Secure Transport Connection Profile): the association runs
//! unchanged over a [`TlsStream`], a [`Transport`] that encrypts with `rustls` (TLS 1.2 and
//! 1.3, AEAD suites with forward secrecy only, as BCP 195 asks; ring as the crypto
//! provider, no OpenSSL).
//!
//! - [`server_config`]: our certificate and key, and with a CA file, mutual TLS: a client
//!   must present a certificate issued by that CA or the handshake fails;
//! - [`client_config`]: peers' certificates checked against the CA file (and their name
//!   against the host we dial), ours presented when configured;
//! - [`PeerCertificate`]: what the policy learns of a client's certificate (its subject
//!   Common Name and SHA-256 fingerprint), to tie it to a configured peer.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig};
use sha2::{Digest, Sha256};

use super::transport::Transport;

/// A TLS setting that cannot be used: which file, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSetupError(pub String);

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TlsSetupError {}

type Setup<T> = std::result::Result<T, TlsSetupError>;

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM file (the leaf first, then its chain).
pub fn load_certificates(path: &Path) -> Setup<Vec<CertificateDer<'static>>> {
    let what =
        |e: &dyn fmt::Display| TlsSetupError(format!("certificate file {}: {e}", path.display()));
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| what(&e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| what(&e))?;
    if certs.is_empty() {
        return Err(what(&"no PEM certificate in it"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn load_key(path: &Path) -> Setup<PrivateKeyDer<'static>> {
    PrivateKeyDer::from_pem_file(path)
        .map_err(|e| TlsSetupError(format!("private key file {}: {e}", path.display())))
}

fn load_roots(path: &Path) -> Setup<Arc<RootCertStore>> {
    let mut roots = RootCertStore::empty();
    for cert in load_certificates(path)? {
        roots.add(cert).map_err(|e| {
            TlsSetupError(format!(
                "CA file {}: unusable certificate: {e}",
                path.display()
            ))
        })?;
    }
    Ok(Arc::new(roots))
}

/// The listener's TLS settings: our certificate chain and key; with `ca`, clients must
/// present a certificate issued by it (mutual authentication).
pub fn server_config(cert: &Path, key_file: &Path, ca: Option<&Path>) -> Setup<Arc<ServerConfig>> {
    let certs = load_certificates(cert)?;
    let key = load_key(key_file)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(e.to_string()))?;
    let builder = match ca {
        Some(ca) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(load_roots(ca)?, provider())
                .build()
                .map_err(|e| TlsSetupError(format!("CA file {}: {e}", ca.display())))?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder.with_single_cert(certs, key).map_err(|e| {
        TlsSetupError(format!(
            "certificate {} and key {}: {e}",
            cert.display(),
            key_file.display()
        ))
    })?;
    Ok(Arc::new(config))
}

/// Our settings when dialing a TLS peer: its certificate must chain to `ca`; with
/// `identity` (certificate, key), ours is presented when the peer asks (mutual TLS).
pub fn client_config(ca: &Path, identity: Option<(&Path, &Path)>) -> Setup<Arc<ClientConfig>> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsSetupError(e.to_string()))?
        .with_root_certificates(load_roots(ca)?);
    let config = match identity {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certificates(cert)?, load_key(key)?)
            .map_err(|e| {
                TlsSetupError(format!("certificate {} and its key: {e}", cert.display()))
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// What a listener learned of the client's certificate, for the policy.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PeerCertificate {
    /// The subject's Common Name, when it has one.
    pub common_name: Option<String>,
    /// SHA-256 of the certificate's DER encoding, lowercase hex.
    pub fingerprint: String,
}

impl PeerCertificate {
    pub fn from_der(der: &[u8]) -> PeerCertificate {
        let digest = Sha256::digest(der);
        PeerCertificate {
            common_name: subject_common_name(der),
            fingerprint: digest.iter().map(|b| format!("{b:02x}")).collect(),
        }
    }
}

/// What the listener knows of a TLS session: `None` certificate when the client sent none
/// (possible only without a CA, i.e. without mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsSession {
    pub peer: Option<PeerCertificate>,
}

/// One DER element: (tag, contents, what follows). Definite lengths up to 4 bytes.
fn der_element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        first as usize
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | b as usize);
        rest = &rest[n..];
        len
    };
    (rest.len() >= len).then(|| (tag, &rest[..len], &rest[len..]))
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
/// The attribute type id-at-commonName, 2.5.4.3 (RFC 5280 A.1), as DER contents.
const COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];

/// The subject Common Name of an X.509 certificate (RFC 5280 4.1): the tbsCertificate's
/// sixth field (fifth without the explicit version), a sequence of RDN sets.
fn subject_common_name(der: &[u8]) -> Option<String> {
    let (_, cert, _) = der_element(der).filter(|e| e.0 == SEQUENCE)?;
    let (_, mut tbs, _) = der_element(cert).filter(|e| e.0 == SEQUENCE)?;
    if tbs.first() == Some(&0xa0) {
        tbs = der_element(tbs)?.2;
    }
    // serialNumber, signature, issuer, validity, then the subject.
    for _ in 0..4 {
        tbs = der_element(tbs)?.2;
    }
    let (_, mut rdns, _) = der_element(tbs).filter(|e| e.0 == SEQUENCE)?;
    while !rdns.is_empty() {
        let (tag, mut set, rest) = der_element(rdns)?;
        rdns = rest;
        if tag != SET {
            continue;
        }
        while !set.is_empty() {
            let (_, atv, rest) = der_element(set)?;
            set = rest;
            let (oid_tag, oid, value) = der_element(atv)?;
            if oid_tag == 0x06 && oid == COMMON_NAME {
                let (vtag, text, _) = der_element(value)?;
                return match vtag {
                    // BMPString: UTF-16BE.
                    0x1e => {
                        let units: Vec<u16> = text
                            .chunks_exact(2)
                            .map(|c| u16::from_be_bytes([c[0], c[1]]))
                            .collect();
                        Some(String::from_utf16_lossy(&units))
                    }
                    _ => Some(String::from_utf8_lossy(text).into_owned()),
                };
            }
        }
    }
    None
}

/// A [`Transport`] that carries the association inside TLS records over the transport `S`.
///
/// Reads and writes follow the socket's blocking mode and timeouts: a read that times out
/// (or would block, for the non-blocking peek of C-CANCEL) fails with the socket's error
/// and leaves any partial record buffered for the next read.
pub struct TlsStream<S: Transport> {
    conn: Connection,
    sock: S,
    /// Bytes read from the socket that rustls has not taken yet: rustls asks for at most
    /// 4 KiB at a time, so a large dataset would cost a system call per 4 KiB without it.
    incoming: Incoming,
    /// The read timeout the association asked for: one `read` waits at most this long for
    /// plaintext, however the peer dribbles the record's bytes (see [`SLACK`]).
    read_timeout: Option<Duration>,
}

/// A read buffer between the socket and rustls (one `read` of up to 64 KiB per refill).
struct Incoming {
    buf: Box<[u8]>,
    start: usize,
    end: usize,
}

impl Incoming {
    fn new() -> Self {
        Incoming {
            buf: vec![0; 64 * 1024].into_boxed_slice(),
            start: 0,
            end: 0,
        }
    }

    /// Hand `rustls` what is buffered, refilling from `sock` (one read) when empty.
    fn feed(&mut self, conn: &mut Connection, sock: &mut dyn Read) -> io::Result<usize> {
        if self.start == self.end {
            let n = sock.read(&mut self.buf)?;
            if n == 0 {
                // End of stream: let rustls see it too.
                return conn.read_tls(&mut io::empty());
            }
            (self.start, self.end) = (0, n);
        }
        let n = conn.read_tls(&mut &self.buf[self.start..self.end])?;
        self.start += n;
        Ok(n)
    }
}

/// How far a `read` may overrun its timeout before the socket's timeout is shortened to
/// what is left: waiting for the rest of a record costs nothing extra in the normal case,
/// and a peer sending a byte at a time cannot stretch ARTIM or the idle timer by more.
const SLACK: Duration = Duration::from_secs(1);

impl<S: Transport> TlsStream<S> {
    /// Accept a TLS session on `sock` (server side) and complete the handshake, waiting at
    /// most `timeout` for each read and write of it.
    pub fn accept(config: Arc<ServerConfig>, sock: S, timeout: Duration) -> io::Result<Self> {
        let conn = rustls::ServerConnection::new(config).map_err(io::Error::other)?;
        TlsStream::handshake(Connection::Server(conn), sock, timeout)
    }

    /// Open a TLS session to the server `name` (host name or IP address, checked against
    /// its certificate) on `sock` and complete the handshake.
    pub fn connect(
        config: Arc<ClientConfig>,
        name: &str,
        sock: S,
        timeout: Duration,
    ) -> io::Result<Self> {
        let name = ServerName::try_from(name.to_string())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, format!("{name:?}: {e}")))?;
        let conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        TlsStream::handshake(Connection::Client(conn), sock, timeout)
    }

    /// The whole handshake within `timeout` (ARTIM), however slowly the peer sends.
    fn handshake(conn: Connection, mut sock: S, timeout: Duration) -> io::Result<Self> {
        sock.set_write_timeout(Some(timeout))?;
        let mut stream = TlsStream {
            conn,
            sock,
            incoming: Incoming::new(),
            read_timeout: Some(timeout),
        };
        let deadline = Instant::now() + timeout;
        while stream.conn.is_handshaking() {
            stream.flush_records()?;
            if !stream.conn.is_handshaking() {
                break;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "TLS handshake timed out",
                ));
            }
            stream.sock.set_read_timeout(Some(left))?;
            if stream.incoming.feed(&mut stream.conn, &mut stream.sock)? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the peer closed the connection during the TLS handshake",
                ));
            }
            stream.process()?;
        }
        // TLS 1.3 servers send session tickets right after the handshake: send them now,
        // so that no write is left pending when the association's first read comes.
        stream.flush_records()?;
        stream.sock.set_read_timeout(Some(timeout))?;
        Ok(stream)
    }

    /// Decrypt what was read; on a TLS error, send the alert rustls queued (best effort).
    fn process(&mut self) -> io::Result<()> {
        if let Err(e) = self.conn.process_new_packets() {
            let _ = self.flush_records();
            return Err(io::Error::new(io::ErrorKind::InvalidData, e));
        }
        Ok(())
    }

    /// The session as the policy sees it (the peer's leaf certificate, if it sent one).
    pub fn session(&self) -> TlsSession {
        TlsSession {
            peer: self
                .conn
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|c| PeerCertificate::from_der(c)),
        }
    }

    /// Write every TLS record waiting to go out.
    fn flush_records(&mut self) -> io::Result<()> {
        while self.conn.wants_write() {
            if self.conn.write_tls(&mut self.sock)? == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
        }
        Ok(())
    }
}

impl<S: Transport> Read for TlsStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let started = Instant::now();
        let mut shortened = false;
        let result = self.read_plaintext(buf, started, &mut shortened);
        if shortened {
            self.sock.set_read_timeout(self.read_timeout)?;
        }
        result
    }
}

impl<S: Transport> TlsStream<S> {
    fn read_plaintext(
        &mut self,
        buf: &mut [u8],
        started: Instant,
        shortened: &mut bool,
    ) -> io::Result<usize> {
        loop {
            match self.conn.reader().read(buf) {
                Ok(n) => return Ok(n),
                // The TCP stream ended without close_notify. The upper layer has its own
                // end (A-RELEASE, A-ABORT) and PDU lengths, so a cut is seen there anyway:
                // report a plain end of stream, as TCP does.
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e),
            }
            // Alerts or a key update answer may be waiting to go out first.
            self.flush_records()?;
            let elapsed = started.elapsed();
            if let Some(timeout) = self.read_timeout.filter(|_| elapsed >= SLACK) {
                let left = timeout.saturating_sub(elapsed);
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                self.sock.set_read_timeout(Some(left))?;
                *shortened = true;
            }
            self.incoming.feed(&mut self.conn, &mut self.sock)?;
            self.process()?;
        }
    }
}

impl<S: Transport> Write for TlsStream<S> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_vectored(&[io::IoSlice::new(buf)])
    }

    fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
        // Records still waiting from an earlier call go first; an error here consumed
        // nothing of `bufs`.
        self.flush_records()?;
        let n = self.conn.writer().write_vectored(bufs)?;
        // The bytes are taken: a failure to send them now shows on the next call.
        let _ = self.flush_records();
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.flush_records()?;
        self.sock.flush()
    }
}

impl<S: Transport> Transport for TlsStream<S> {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_read_timeout(timeout)?;
        self.read_timeout = timeout;
        Ok(())
    }
    fn set_write_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        self.sock.set_write_timeout(timeout)
    }
    fn set_nonblocking(&mut self, nonblocking: bool) -> io::Result<()> {
        self.sock.set_nonblocking(nonblocking)
    }
    fn shutdown_write(&mut self) -> io::Result<()> {
        // close_notify first (RFC 8446 6.1), then the TCP half-close.
        self.conn.send_close_notify();
        let _ = self.flush_records();
        self.sock.shutdown_write()
    }
    fn close(&mut self) -> io::Result<()> {
        self.sock.close()
    }
    fn peer_addr(&self) -> Option<SocketAddr> {
        self.sock.peer_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_lengths_are_checked() {
        assert_eq!(
            der_element(&[0x30, 0x02, 1, 2]),
            Some((0x30, &[1u8, 2][..], &[][..]))
        );
        assert_eq!(der_element(&[0x30, 0x03, 1, 2]), None);
        assert_eq!(
            der_element(&[0x30, 0x81, 0x01, 7, 9]),
            Some((0x30, &[7u8][..], &[9u8][..]))
        );
        assert_eq!(der_element(&[0x30, 0x85, 0, 0, 0, 0, 1]), None);
        assert_eq!(subject_common_name(&[0x30, 0x00]), None);
        assert_eq!(subject_common_name(&[]), None);
    }
}

//! DICOM over TLS (PS3.15 B.9) end to end in Rust: a TLS server with mutual authentication,
//! the requestor dialing it with `connect_with`, the client certificate reaching the policy,
//! and refusals of clients the CA did not certify. Certificates are made at test time with
//! the `openssl` command (skipped without it).

use std::path::{Path, PathBuf};
use std::process::Command as Process;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duckpacs_core::net::pdu::{self, Rejection};
use duckpacs_core::net::tls::{client_config, server_config, PeerCertificate};
use duckpacs_core::net::{
    connect_with, Acceptance, Accepted, AssociationRequest, ContextDecision, EchoScp, Policy,
    Proposal, Server, ServerConfig, Status, Timeouts, TlsDial, TransferSyntaxes,
};

const VERIFICATION: &str = "1.2.840.10008.1.1";
const IMPLICIT: &str = "1.2.840.10008.1.2";

fn openssl(args: &[&str]) -> bool {
    Process::new("openssl")
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `openssl` with a command line split at spaces (the temporary paths have none).
fn run(line: &str) {
    let args: Vec<&str> = line.split(' ').collect();
    assert!(openssl(&args), "openssl {line}");
}

fn show(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A CA (`name`.pem/.key) in `dir`.
fn ca(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    run(&format!(
        "req -x509 -newkey rsa:2048 -nodes -days 2 -keyout {} -out {} -subj /CN={name}",
        show(&key),
        show(&cert)
    ));
    (cert, key)
}

/// A leaf certificate for 127.0.0.1 with Common Name `cn`, issued by `issuer`.
fn leaf(dir: &Path, name: &str, cn: &str, issuer: &(PathBuf, PathBuf)) -> (PathBuf, PathBuf) {
    let path = |ext: &str| dir.join(format!("{name}.{ext}"));
    let (cert, key, csr) = (path("pem"), path("key"), path("csr"));
    let ext = dir.join("leaf.ext");
    std::fs::write(
        &ext,
        "basicConstraints = critical, CA:FALSE\n\
         extendedKeyUsage = serverAuth, clientAuth\n\
         subjectAltName = IP:127.0.0.1\n",
    )
    .unwrap();
    run(&format!(
        "req -new -newkey rsa:2048 -nodes -keyout {} -out {} -subj /O=tests/CN={cn}",
        show(&key),
        show(&csr)
    ));
    run(&format!(
        "x509 -req -in {} -CA {} -CAkey {} -CAcreateserial -days 2 -out {} -extfile {}",
        show(&csr),
        show(&issuer.0),
        show(&issuer.1),
        show(&cert),
        show(&ext)
    ));
    (cert, key)
}

/// Accepts Verification and remembers the client certificate of each association.
struct Recording {
    seen: Arc<Mutex<Vec<Option<PeerCertificate>>>>,
}

impl Policy for Recording {
    fn decide(&self, r: &AssociationRequest<'_>) -> Result<Accepted, Rejection> {
        let peer = r.tls.and_then(|s| s.peer.clone());
        self.seen.lock().unwrap().push(peer);
        let syntaxes = TransferSyntaxes::new(&[IMPLICIT], false);
        let acceptance = Acceptance::by_abstract_syntax(r.contexts(), |a| match a {
            VERIFICATION => ContextDecision::Accept(syntaxes.clone()),
            _ => ContextDecision::Refuse(pdu::ContextResult::AbstractSyntaxNotSupported),
        });
        Ok(Accepted {
            acceptance,
            service: Box::new(EchoScp),
        })
    }
}

#[test]
fn echo_over_mutual_tls_and_refusals() {
    if !openssl(&["version"]) {
        eprintln!("skipped: no openssl command");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let authority = ca(d, "ca");
    let rogue = ca(d, "rogue");
    let server = leaf(d, "server", "archive", &authority);
    let client = leaf(d, "client", "MODALITY", &authority);
    let stranger = leaf(d, "stranger", "MODALITY", &rogue);

    let seen = Arc::new(Mutex::new(Vec::new()));
    let policy = Arc::new(Recording {
        seen: Arc::clone(&seen),
    });
    let tls = server_config(&server.0, &server.1, Some(&authority.0)).unwrap();
    let listener = Server::bind_tls("127.0.0.1:0", ServerConfig::default(), policy, tls).unwrap();
    let addr = listener.local_addr();
    let timeouts = Timeouts {
        artim: Duration::from_secs(10),
        idle: Some(Duration::from_secs(10)),
    };
    let proposal = Proposal::new("MODALITY", "DUCKPACS").with_context(VERIFICATION, &[IMPLICIT]);
    let dial = |identity: Option<&(PathBuf, PathBuf)>| TlsDial {
        config: client_config(
            &authority.0,
            identity.map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .unwrap(),
        server_name: "127.0.0.1".into(),
    };

    let mut assoc = connect_with(addr, &proposal, timeouts, Some(&dial(Some(&client)))).unwrap();
    assert_eq!(assoc.echo().unwrap(), Status::SUCCESS);
    assoc.release().unwrap();
    let got = seen.lock().unwrap().clone();
    let cert = got[0]
        .as_ref()
        .expect("the client certificate reaches the policy");
    assert_eq!(cert.common_name.as_deref(), Some("MODALITY"));
    assert_eq!(cert.fingerprint.len(), 64);

    // No certificate, a certificate from another CA, plain TCP: no association, and the
    // policy never hears of them.
    assert!(connect_with(addr, &proposal, timeouts, Some(&dial(None))).is_err());
    assert!(connect_with(addr, &proposal, timeouts, Some(&dial(Some(&stranger)))).is_err());
    assert!(connect_with(addr, &proposal, timeouts, None).is_err());
    assert_eq!(seen.lock().unwrap().len(), 1);

    // Our dialing side checks the server too: a server certificate from another CA fails.
    let wrong = TlsDial {
        config: client_config(&rogue.0, Some((client.0.as_path(), client.1.as_path()))).unwrap(),
        server_name: "127.0.0.1".into(),
    };
    assert!(connect_with(addr, &proposal, timeouts, Some(&wrong)).is_err());
    listener.shutdown(Duration::from_secs(1));
}

#[test]
fn unusable_files_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(&garbage, "not PEM\n").unwrap();
    let e = server_config(&garbage, &garbage, None).unwrap_err();
    assert!(
        e.0.contains("certificate file") && e.0.contains("garbage.pem"),
        "{e}"
    );
    let missing = dir.path().join("missing.pem");
    let e = client_config(&missing, None).unwrap_err();
    assert!(e.0.contains("missing.pem"), "{e}");
}

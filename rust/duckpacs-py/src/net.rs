//! Python binding of the DICOM listener (`duckpacs_core::net`): conversions only.
//!
//! `DimseServer(writer, store, host, ...)` serves DIMSE on native threads. `host` is a
//! Python object answering what only the orchestrator knows (see `duckpacs.net.scp`); its
//! methods are called with the GIL from the association's thread:
//!
//! - `admit(calling_ae, called_ae, address, tls)` -> `(echo, store, find, get, move)`
//!   booleans, or an int: the PS3.8 9.3.4 rejection reason (3 calling, 7 called AE not
//!   recognised). `tls` is None on the plain listener, else a dict with the client
//!   certificate's `common_name` and `fingerprint` (SHA-256 hex), both None without one;
//! - `find(level, matching, return_keys)` -> list of dicts keyword -> text / None / list;
//! - `locate(level, matching)` -> list of `(uid, sop_class, ts, pack, offset, length)`;
//! - `transcode(stream, transfer_syntax)` -> dataset bytes;
//! - `destination(ae_title)` -> `(host, port, tls)` or None, `tls` as `send_stored` takes it;
//! - `rare(peer, command, dataset, transfer_syntax)` -> `(status, dataset or None,
//!   (event_type, info) or None, pending datasets, error comment or None, affected SOP
//!   Instance UID or None)`;
//! - `report_elsewhere(peer, command, event_type, info)`.
//!
//! An exception raised by a callback is logged and answered as a failure of that request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use duckpacs_core::net::dimse::Command;
use duckpacs_core::net::scp::{
    ArchivePolicy, Destination, Host, Located, Peer, Permissions, Query, RareReply, Refusal, Row,
    RowValue,
};
use duckpacs_core::net::storescu::Sent;
use duckpacs_core::net::tls::{self, TlsSession};
use duckpacs_core::net::{Server, ServerConfig, Timeouts, TlsDial};
use duckpacs_core::store::Location;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList};

use crate::archive::ArchiveWriter;
use crate::store::Store;

struct PyHost(Py<PyAny>);

/// What the host's `rare` returns: (status, response dataset, (event type, information),
/// pending answers, error comment, affected SOP Instance UID).
type RareAnswer = (
    u16,
    Option<Vec<u8>>,
    Option<(u16, Vec<u8>)>,
    Vec<Vec<u8>>,
    Option<String>,
    Option<String>,
);

fn tls_dict<'py>(
    py: Python<'py>,
    tls: Option<&TlsSession>,
) -> PyResult<Option<Bound<'py, PyDict>>> {
    let Some(session) = tls else {
        return Ok(None);
    };
    let d = PyDict::new(py);
    let cert = session.peer.as_ref();
    d.set_item("common_name", cert.and_then(|c| c.common_name.clone()))?;
    d.set_item("fingerprint", cert.map(|c| c.fingerprint.clone()))?;
    Ok(Some(d))
}

fn peer_dict<'py>(py: Python<'py>, peer: &Peer) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("calling_ae", &peer.calling_ae)?;
    d.set_item("called_ae", &peer.called_ae)?;
    d.set_item("address", peer.addr.map(|a| a.ip().to_string()))?;
    d.set_item("port", peer.addr.map(|a| a.port()))?;
    d.set_item("tls", tls_dict(py, peer.tls.as_ref())?)?;
    Ok(d)
}

fn config_error(py: Python<'_>, e: tls::TlsSetupError) -> PyErr {
    crate::errors::py_error(py, "ConfigError", format!("DICOM TLS: {e}"))
}

/// Our TLS client settings from `(ca, certificate, key, server name)`: the peer's
/// certificate must chain to `ca` and carry `server name`; ours is shown when both given.
type TlsArgs = (String, Option<String>, Option<String>, String);

fn tls_dial(py: Python<'_>, tls: Option<TlsArgs>) -> PyResult<Option<TlsDial>> {
    let Some((ca, cert, key, server_name)) = tls else {
        return Ok(None);
    };
    let identity = match (&cert, &key) {
        (Some(c), Some(k)) => Some((std::path::Path::new(c), std::path::Path::new(k))),
        _ => None,
    };
    let config =
        tls::client_config(std::path::Path::new(&ca), identity).map_err(|e| config_error(py, e))?;
    Ok(Some(TlsDial {
        config,
        server_name,
    }))
}

fn command_dict<'py>(py: Python<'py>, c: &Command) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("field", c.field.0)?;
    d.set_item("message_id", c.message_id)?;
    d.set_item("requested_sop_class_uid", &c.requested_sop_class_uid)?;
    d.set_item("requested_sop_instance_uid", &c.requested_sop_instance_uid)?;
    d.set_item("affected_sop_class_uid", &c.affected_sop_class_uid)?;
    d.set_item("affected_sop_instance_uid", &c.affected_sop_instance_uid)?;
    d.set_item("action_type_id", c.action_type_id)?;
    d.set_item("event_type_id", c.event_type_id)?;
    Ok(d)
}

fn matching_dict<'py>(py: Python<'py>, q: &Query) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    for (k, v) in &q.matching {
        d.set_item(k, v)?;
    }
    Ok(d)
}

fn row_value(v: &Bound<'_, PyAny>) -> RowValue {
    if v.is_none() {
        RowValue::Null
    } else if v.is_instance_of::<PyList>() {
        RowValue::Items
    } else {
        match v.extract::<String>() {
            Ok(s) => RowValue::Text(s),
            Err(_) => v
                .str()
                .map(|s| RowValue::Text(s.to_string()))
                .unwrap_or(RowValue::Null),
        }
    }
}

fn failure(what: &str, e: PyErr) -> String {
    log::error!("{what} callback failed: {e}");
    e.to_string()
}

impl Host for PyHost {
    fn admit(&self, peer: &Peer) -> Result<Permissions, Refusal> {
        Python::attach(|py| {
            let addr = peer.addr.map(|a| a.ip().to_string());
            let tls = tls_dict(py, peer.tls.as_ref()).map_err(|e| {
                failure("admit", e);
                Refusal::NoReason
            })?;
            let answer = self
                .0
                .call_method1(py, "admit", (&peer.calling_ae, &peer.called_ae, addr, tls))
                .map_err(|e| {
                    failure("admit", e);
                    Refusal::NoReason
                })?;
            if let Ok(reason) = answer.extract::<u8>(py) {
                return Err(match reason {
                    3 => Refusal::CallingAeNotRecognized,
                    7 => Refusal::CalledAeNotRecognized,
                    _ => Refusal::NoReason,
                });
            }
            let (echo, store, find, get, move_): (bool, bool, bool, bool, bool) =
                answer.extract(py).map_err(|e| {
                    failure("admit", e);
                    Refusal::NoReason
                })?;
            Ok(Permissions {
                echo,
                store,
                find,
                get,
                move_,
            })
        })
    }

    fn find(&self, level: &str, query: &Query) -> Result<Vec<Row>, String> {
        Python::attach(|py| {
            let matching = matching_dict(py, query).map_err(|e| failure("find", e))?;
            let rows = self
                .0
                .call_method1(py, "find", (level, matching, query.return_keys.clone()))
                .map_err(|e| failure("find", e))?;
            let rows = rows.bind(py);
            let mut out = Vec::new();
            for row in rows.try_iter().map_err(|e| failure("find", e))? {
                let row = row.map_err(|e| failure("find", e))?;
                let row = row
                    .cast::<PyDict>()
                    .map_err(|e| failure("find", e.into()))?;
                let mut values = Vec::with_capacity(row.len());
                for (k, v) in row.iter() {
                    values.push((
                        k.extract::<String>().map_err(|e| failure("find", e))?,
                        row_value(&v),
                    ));
                }
                out.push(values);
            }
            Ok(out)
        })
    }

    fn locate(&self, level: &str, query: &Query) -> Result<Vec<Located>, String> {
        Python::attach(|py| {
            let matching = matching_dict(py, query).map_err(|e| failure("locate", e))?;
            let found = self
                .0
                .call_method1(py, "locate", (level, matching))
                .map_err(|e| failure("locate", e))?;
            let found: Vec<(String, String, String, u64, u64, u64)> =
                found.extract(py).map_err(|e| failure("locate", e))?;
            Ok(found
                .into_iter()
                .map(|(uid, class, ts, pack, offset, length)| Located {
                    sop_instance_uid: uid,
                    sop_class_uid: class,
                    transfer_syntax: ts,
                    location: Location {
                        pack,
                        offset,
                        length,
                    },
                })
                .collect())
        })
    }

    fn transcode(&self, stream: &[u8], transfer_syntax: &str) -> Result<Vec<u8>, String> {
        Python::attach(|py| {
            let data = PyBytes::new(py, stream);
            let out = self
                .0
                .call_method1(py, "transcode", (data, transfer_syntax))
                .map_err(|e| e.to_string())?;
            out.extract::<Vec<u8>>(py).map_err(|e| e.to_string())
        })
    }

    fn destination(&self, ae_title: &str) -> Option<Destination> {
        Python::attach(|py| {
            let found = self
                .0
                .call_method1(py, "destination", (ae_title,))
                .map_err(|e| failure("destination", e))
                .ok()?;
            let (host, port, tls) = found
                .extract::<Option<(String, u16, Option<TlsArgs>)>>(py)
                .map_err(|e| failure("destination", e))
                .ok()
                .flatten()?;
            let tls = tls_dial(py, tls)
                .map_err(|e| failure("destination", e))
                .ok()?;
            Some(Destination { host, port, tls })
        })
    }

    fn rare(
        &self,
        peer: &Peer,
        command: &Command,
        dataset: &[u8],
        transfer_syntax: &str,
    ) -> RareReply {
        let failed = RareReply {
            status: 0x0110,
            ..RareReply::default()
        };
        Python::attach(|py| {
            let args = (
                peer_dict(py, peer)?,
                command_dict(py, command)?,
                PyBytes::new(py, dataset),
                transfer_syntax,
            );
            let answer = self.0.call_method1(py, "rare", args)?;
            let (status, dataset, report, pending, comment, instance_uid): RareAnswer =
                answer.extract(py)?;
            Ok::<_, PyErr>(RareReply {
                status,
                dataset,
                report,
                pending,
                comment,
                instance_uid,
            })
        })
        .unwrap_or_else(|e| {
            failure("rare", e);
            failed
        })
    }

    fn report_elsewhere(&self, peer: &Peer, command: &Command, event_type: u16, info: &[u8]) {
        let result = Python::attach(|py| {
            let args = (
                peer_dict(py, peer)?,
                command_dict(py, command)?,
                event_type,
                PyBytes::new(py, info),
            );
            self.0
                .call_method1(py, "report_elsewhere", args)
                .map(|_| ())
        });
        if let Err(e) = result {
            failure("report_elsewhere", e);
        }
    }
}

/// The DICOM listener of `duckpacs serve` (see the module docs).
#[pyclass(frozen, module = "duckpacs._core")]
pub struct DimseServer {
    server: Mutex<Option<Server>>,
    port: u16,
}

#[pymethods]
impl DimseServer {
    #[new]
    /// `tls`: `(certificate, key, ca or None)` PEM files for a DICOM TLS listener; with a
    /// CA, clients must present a certificate it issued (mutual TLS).
    #[pyo3(signature = (writer, store, host, ae_title, bind, port, max_pdu=262144, max_associations=32, artim=30.0, idle=60.0, tls=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        writer: &ArchiveWriter,
        store: &Store,
        host: Py<PyAny>,
        ae_title: &str,
        bind: &str,
        port: u16,
        max_pdu: u32,
        max_associations: usize,
        artim: f64,
        idle: f64,
        tls: Option<(String, String, Option<String>)>,
    ) -> PyResult<Self> {
        let tls = match tls {
            Some((cert, key, ca)) => Some(
                tls::server_config(
                    std::path::Path::new(&cert),
                    std::path::Path::new(&key),
                    ca.as_deref().map(std::path::Path::new),
                )
                .map_err(|e| config_error(py, e))?,
            ),
            None => None,
        };
        let timeouts = Timeouts {
            artim: Duration::from_secs_f64(artim.max(0.1)),
            idle: (idle > 0.0).then(|| Duration::from_secs_f64(idle)),
        };
        let writer = writer.writer()?;
        // Spool files of a killed server hold nothing acknowledged (see scp::spool).
        duckpacs_core::net::scp::spool::clear(&duckpacs_core::net::scp::spool::dir(
            writer.store_handle().root(),
        ));
        let policy = ArchivePolicy {
            host: Arc::new(PyHost(host)),
            writer,
            store: store.inner()?,
            our_ae: ae_title.to_string(),
            timeouts,
        };
        let config = ServerConfig {
            max_pdu,
            max_associations: max_associations.max(1),
            timeouts,
            ..ServerConfig::default()
        };
        let addr = format!("{bind}:{port}");
        let server = py
            .detach(|| match tls {
                Some(tls) => Server::bind_tls(addr.as_str(), config, Arc::new(policy), tls),
                None => Server::bind(addr.as_str(), config, Arc::new(policy)),
            })
            .map_err(|e| PyErr::new::<pyo3::exceptions::PyOSError, _>(e.to_string()))?;
        let port = server.local_addr().port();
        Ok(DimseServer {
            server: Mutex::new(Some(server)),
            port,
        })
    }

    /// The port it listens on (useful when bound to port 0).
    #[getter]
    fn port(&self) -> u16 {
        self.port
    }

    /// Connections negotiating and associations established right now.
    fn load(&self) -> (usize, usize) {
        let g = self.server.lock().unwrap_or_else(|p| p.into_inner());
        g.as_ref().map_or((0, 0), |s| {
            let l = s.load();
            (l.pending, l.established)
        })
    }

    /// Stop accepting, let associations finish for `grace` seconds, abort the rest.
    #[pyo3(signature = (grace=10.0))]
    fn stop(&self, py: Python<'_>, grace: f64) {
        let server = self.server.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(s) = server {
            py.detach(|| s.shutdown(Duration::from_secs_f64(grace.max(0.0))));
        }
    }
}

/// C-STORE of stored instances to a peer (`duckpacs send`): one association, each instance
/// as stored or, when the peer refuses that syntax, transcoded by `transcode(stream, ts)`.
/// `items`: `(uid, sop_class, ts, pack, offset, length)`. `progress(done, total, failure)`
/// after each C-STORE is answered: `failure` is `None` when the peer stored it (success or
/// warning), else why not, so a caller can record each outcome before the next is sent.
/// Returns `{"completed", "warning", "failed", "failures": [(uid, reason)]}`; raises
/// `NetworkError` when no association can be made. `tls`: `(ca, certificate, key, server
/// name)` to send over DICOM TLS (certificate and key may be None).
#[pyfunction]
#[pyo3(signature = (store, host, port, our_ae, peer_ae, items, transcode, timeout=30.0, progress=None, tls=None))]
#[allow(clippy::too_many_arguments)]
fn send_stored<'py>(
    py: Python<'py>,
    store: &Store,
    host: &str,
    port: u16,
    our_ae: &str,
    peer_ae: &str,
    items: Vec<(String, String, String, u64, u64, u64)>,
    transcode: Py<PyAny>,
    timeout: f64,
    progress: Option<Py<PyAny>>,
    tls: Option<TlsArgs>,
) -> PyResult<Bound<'py, PyDict>> {
    let store = store.inner()?;
    let tls = tls_dial(py, tls)?;
    let items: Vec<Located> = items
        .into_iter()
        .map(|(uid, class, ts, pack, offset, length)| Located {
            sop_instance_uid: uid,
            sop_class_uid: class,
            transfer_syntax: ts,
            location: Location {
                pack,
                offset,
                length,
            },
        })
        .collect();
    let timeouts = Timeouts {
        artim: Duration::from_secs_f64(timeout.max(0.1)),
        idle: Some(Duration::from_secs_f64(timeout.max(0.1))),
    };
    let proposal = duckpacs_core::net::storescu::proposal(our_ae, peer_ae, &items);
    let transcoder = |stream: &[u8], ts: &str| -> Result<Vec<u8>, String> {
        Python::attach(|py| {
            transcode
                .call1(py, (PyBytes::new(py, stream), ts))
                .and_then(|r| r.extract::<Vec<u8>>(py))
                .map_err(|e| e.to_string())
        })
    };
    let outcome = py.detach(|| {
        let mut assoc =
            duckpacs_core::net::connect_with((host, port), &proposal, timeouts, tls.as_ref())?;
        let mut sent = Vec::with_capacity(items.len());
        for (n, item) in items.iter().enumerate() {
            let r = duckpacs_core::net::storescu::send_stored(
                &store,
                &mut assoc,
                item,
                None,
                &transcoder,
            );
            if let Some(cb) = &progress {
                let failure = match &r {
                    Sent::Failed(why) => Some(why.clone()),
                    Sent::Completed | Sent::Warning => None,
                };
                Python::attach(|py| {
                    let _ = cb.call1(py, (n + 1, items.len(), failure));
                });
            }
            sent.push(r);
            if !assoc.is_open() {
                break;
            }
        }
        if assoc.is_open() {
            let _ = assoc.release();
        }
        Ok::<_, duckpacs_core::net::Error>(sent)
    });
    let sent = outcome.map_err(|e| {
        crate::errors::py_error(
            py,
            "NetworkError",
            format!("{peer_ae} at {host}:{port}: {e}"),
        )
    })?;
    let (mut completed, mut warning) = (0usize, 0usize);
    let mut failures: Vec<(String, String)> = Vec::new();
    for (item, r) in items.iter().zip(&sent) {
        match r {
            Sent::Completed => completed += 1,
            Sent::Warning => warning += 1,
            Sent::Failed(why) => failures.push((item.sop_instance_uid.clone(), why.clone())),
        }
    }
    for item in items.iter().skip(sent.len()) {
        failures.push((
            item.sop_instance_uid.clone(),
            "the association ended first".into(),
        ));
    }
    let d = PyDict::new(py);
    d.set_item("completed", completed)?;
    d.set_item("warning", warning)?;
    d.set_item("failed", failures.len())?;
    d.set_item("failures", failures)?;
    Ok(d)
}

/// C-GET of a study (`duckpacs migrate`): the sub-operations come back on this association
/// and each goes to `receiver(sop_instance_uid, part10_bytes) -> status` (the Part 10 meta
/// built from the request and the context's transfer syntax). `offers`: (SOP class,
/// transfer syntax) pairs to propose, one context each, with the SCP role. Returns
/// `{"accepted", "status", "completed", "failed", "warning", "received", "errors",
/// "ended"}`; raises `NetworkError` when no association can be made. `tls` as for
/// `send_stored`.
#[pyfunction]
#[pyo3(signature = (host, port, our_ae, peer_ae, study_uid, offers, receiver, timeout=30.0, tls=None))]
#[allow(clippy::too_many_arguments)]
fn get_study<'py>(
    py: Python<'py>,
    host: &str,
    port: u16,
    our_ae: &str,
    peer_ae: &str,
    study_uid: &str,
    offers: Vec<(String, String)>,
    receiver: Py<PyAny>,
    timeout: f64,
    tls: Option<TlsArgs>,
) -> PyResult<Bound<'py, PyDict>> {
    let tls = tls_dial(py, tls)?;
    let timeouts = Timeouts {
        artim: Duration::from_secs_f64(timeout.max(0.1)),
        idle: Some(Duration::from_secs_f64(timeout.max(0.1))),
    };
    let mut sink = |(class, uid, ts, data): duckpacs_core::net::getscu::Incoming<'_>| {
        let mut stream = duckpacs_core::part10::build_meta(class, uid, ts, peer_ae);
        stream.extend_from_slice(&data);
        drop(data);
        Python::attach(|py| {
            receiver
                .call1(py, (uid, PyBytes::new(py, &stream)))
                .and_then(|r| r.extract::<u16>(py))
                .map_err(|e| e.to_string())
        })
    };
    let outcome = py.detach(|| {
        duckpacs_core::net::getscu::get_study(
            (host, port),
            our_ae,
            peer_ae,
            study_uid,
            &offers,
            timeouts,
            tls.as_ref(),
            &mut sink,
        )
    });
    let got = outcome.map_err(|e| {
        crate::errors::py_error(
            py,
            "NetworkError",
            format!("{peer_ae} at {host}:{port}: {e}"),
        )
    })?;
    let d = PyDict::new(py);
    d.set_item("accepted", got.accepted)?;
    d.set_item("status", got.status)?;
    d.set_item("completed", got.completed)?;
    d.set_item("failed", got.failed)?;
    d.set_item("warning", got.warning)?;
    d.set_item("received", got.received)?;
    d.set_item("errors", got.errors)?;
    d.set_item("ended", got.ended)?;
    Ok(d)
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<DimseServer>()?;
    m.add_function(wrap_pyfunction!(get_study, m)?)?;
    m.add_function(wrap_pyfunction!(send_stored, m)?)?;
    Ok(())
}

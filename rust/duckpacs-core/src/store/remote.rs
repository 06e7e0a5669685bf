//! Storage layer, packs on S3-compatible object storage (issue 26): several nodes, one
//! archive.
//!
//! Each node keeps writing its packs locally, exactly as an embedded archive does (durable
//! by fsync before an acknowledgement). A pack that is no longer being appended to is
//! uploaded whole to `<prefix>/<node>/<pack file name>`; `packs/uploads.log` records each
//! confirmed upload (name and size, fsynced), so a node killed mid-upload uploads again
//! what the log does not confirm. Packs removed locally (compaction, densifying) are
//! removed from the bucket after every pending upload went through.
//!
//! Another node's instance is named by a pack id whose bits 48..62 hold that node's number
//! (see [`node_of`]); its records are read by ranged GETs of whole aligned blocks, kept in a
//! bounded in-memory cache, so a frame never fetches its whole pack.

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use object_store::aws::AmazonS3Builder;
use object_store::path::Path as ObjectPath;
use object_store::{BackoffConfig, ClientOptions, ObjectStore, PutPayload, RetryConfig};

use super::pack::{self, PackRead};
use super::{lock, Store};
use crate::error::{Error, Result};

/// Pack ids at or above `1 << NODE_SHIFT` name another node's pack.
pub const NODE_SHIFT: u32 = 48;

/// The node number a pack id carries (0: this node's own store).
pub fn node_of(pack: u64) -> u16 {
    (pack >> NODE_SHIFT) as u16
}

/// The node bits of a pack id (0 for this node's own packs).
pub fn node_bits(pack: u64) -> u64 {
    pack & !local_id(u64::MAX)
}

/// The pack id as its writing node names it (node bits cleared).
pub fn local_id(pack: u64) -> u64 {
    pack & ((1u64 << NODE_SHIFT) - 1)
}

/// Ranged reads fetch and cache whole blocks of this size.
const BLOCK: u64 = 1 << 20;

/// Uploads go in parts of this size (S3 wants at least 5 MiB per part but the last).
const PART: usize = 16 << 20;

/// Where the bucket is and how to reach it. Credentials are never logged or displayed.
#[derive(Clone)]
pub struct RemoteConfig {
    pub endpoint: String,
    pub bucket: String,
    pub prefix: String,
    pub region: String,
    pub access_key: String,
    pub secret_key: String,
    /// This node's name: its packs go under `<prefix>/<node>/`.
    pub node: String,
    pub cache_bytes: u64,
    pub timeout: Duration,
}

impl std::fmt::Debug for RemoteConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteConfig")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("prefix", &self.prefix)
            .field("node", &self.node)
            .finish_non_exhaustive()
    }
}

/// Counters of [`Store::remote_stats`].
#[derive(Debug, Clone, Default)]
pub struct RemoteStats {
    pub gets: u64,
    pub get_bytes: u64,
    pub hits: u64,
    pub cache_bytes: u64,
    pub cache_limit: u64,
}

/// The packs a writer may still append to, which are neither uploaded nor evicted: this
/// process's open pack (its sealed last pack is done), or the last pack of another writer
/// whose lock is held (an `import` running beside `serve`).
struct Appending {
    own: Option<u64>,
    own_active: Option<u64>,
    last_of: HashMap<u64, u64>,
}

impl Appending {
    fn contains(&self, store: &Store, pack: u64) -> bool {
        if Some(pack >> 32) == self.own {
            Some(pack) == self.own_active
        } else {
            self.last_of.get(&(pack >> 32)) == Some(&pack) && store.pack_active(pack)
        }
    }
}

/// What one [`Store::evict_step`] did.
#[derive(Debug, Clone, Default)]
pub struct EvictReport {
    pub evicted: u64,
    pub bytes: u64,
    /// Bytes of packs left on this node's disk.
    pub local_bytes: u64,
}

/// A pack in this node's listing: on its disk, or only in the bucket (evicted).
#[derive(Debug, Clone)]
pub enum Listed {
    Local(PathBuf),
    Evicted(u64),
}

/// What one [`Store::upload_step`] did, and what is left.
#[derive(Debug, Clone, Default)]
pub struct UploadReport {
    pub uploaded: u64,
    pub bytes: u64,
    pub deleted: u64,
    /// Packs (and their bytes) on local disk that the bucket does not hold yet, the open
    /// pack of a live writer included.
    pub pending_packs: u64,
    pub pending_bytes: u64,
    /// Of those, the bytes of packs nothing appends to any more: what an unreachable bucket
    /// lets pile up (the open packs' bytes wait for their seal, not for the bucket).
    pub sealed_pending_bytes: u64,
    /// The first failure, when the endpoint could not be reached or refused: the step stops
    /// there and the next one starts again.
    pub error: Option<String>,
}

/// A block of a remote pack: (pack id, block number).
type BlockKey = (u64, u64);

/// What `uploads.log` says of one pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Upload {
    /// Bytes the bucket holds (0: removed from the bucket).
    size: u64,
    /// The local copy was removed: the bucket is where this node reads it from.
    evicted: bool,
}

/// Blocks of remote packs, least recently used evicted first, bounded in bytes. Each entry
/// holds its data and the tick of its last use.
#[derive(Default)]
struct BlockCache {
    blocks: HashMap<BlockKey, (Arc<Vec<u8>>, u64)>,
    by_use: BTreeMap<u64, BlockKey>,
    tick: u64,
    bytes: u64,
}

impl BlockCache {
    fn get(&mut self, key: (u64, u64)) -> Option<Arc<Vec<u8>>> {
        self.tick += 1;
        let tick = self.tick;
        let (data, used) = self.blocks.get_mut(&key)?;
        self.by_use.remove(used);
        *used = tick;
        self.by_use.insert(tick, key);
        Some(data.clone())
    }

    fn drop_block(&mut self, key: (u64, u64)) {
        if let Some((d, used)) = self.blocks.remove(&key) {
            self.by_use.remove(&used);
            self.bytes -= d.len() as u64;
        }
    }

    fn put(&mut self, key: (u64, u64), data: Arc<Vec<u8>>, limit: u64) {
        self.drop_block(key);
        if data.len() as u64 > limit {
            return;
        }
        while self.bytes + data.len() as u64 > limit {
            let Some((_, old)) = self.by_use.pop_first() else {
                break;
            };
            if let Some((d, _)) = self.blocks.remove(&old) {
                self.bytes -= d.len() as u64;
            }
        }
        self.tick += 1;
        self.bytes += data.len() as u64;
        self.by_use.insert(self.tick, key);
        self.blocks.insert(key, (data, self.tick));
    }
}

/// The bucket as one node sees it: its client, the names of the other nodes, the block
/// cache and the upload log.
pub struct Remote {
    client: Arc<dyn ObjectStore>,
    runtime: tokio::runtime::Runtime,
    config: RemoteConfig,
    nodes: Mutex<HashMap<u16, String>>,
    cache: Mutex<BlockCache>,
    gets: AtomicU64,
    get_bytes: AtomicU64,
    hits: AtomicU64,
    /// Pack file name -> what the bucket holds of it.
    uploaded: Mutex<HashMap<String, Upload>>,
    log_path: PathBuf,
}

fn remote_err(key: &str, e: object_store::Error) -> std::io::Error {
    let kind = match e {
        object_store::Error::NotFound { .. } => std::io::ErrorKind::NotFound,
        _ => std::io::ErrorKind::Other,
    };
    std::io::Error::new(kind, format!("object storage ({key}): {}", first_line(&e)))
}

/// The first line of an error (the client's errors nest their causes over many lines).
fn first_line(e: &dyn std::fmt::Display) -> String {
    let s = e.to_string();
    s.lines().next().unwrap_or_default().to_string()
}

impl Remote {
    /// A client for `config`'s bucket (nothing is sent until the first request).
    pub fn connect(config: RemoteConfig, packs_dir: &Path) -> Result<Remote> {
        let bad = |m: String| Error::Store {
            path: PathBuf::from(&config.endpoint),
            offset: 0,
            message: m,
        };
        let options = ClientOptions::new()
            .with_timeout(config.timeout)
            .with_connect_timeout(config.timeout.min(Duration::from_secs(5)))
            .with_allow_http(config.endpoint.starts_with("http://"));
        // Bounded retries: a node must answer its peer within the peer's timeout, so a
        // bucket that is down is a failure after a few seconds, not a stall.
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(1),
                base: 2.0,
            },
            max_retries: 2,
            retry_timeout: config.timeout,
        };
        let client = AmazonS3Builder::new()
            .with_endpoint(&config.endpoint)
            .with_bucket_name(&config.bucket)
            .with_region(&config.region)
            .with_access_key_id(&config.access_key)
            .with_secret_access_key(&config.secret_key)
            .with_virtual_hosted_style_request(false)
            .with_client_options(options)
            .with_retry(retry)
            .build()
            .map_err(|e| bad(format!("object storage settings: {}", first_line(&e))))?;
        Self::with_client(Arc::new(client), config, packs_dir)
    }

    /// Over any object store (the tests use one in memory).
    pub fn with_client(
        client: Arc<dyn ObjectStore>,
        config: RemoteConfig,
        packs_dir: &Path,
    ) -> Result<Remote> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("duckpacs-s3")
            .enable_all()
            .build()
            .map_err(|e| Error::io(packs_dir, e))?;
        let log_path = packs_dir.join("uploads.log");
        let uploaded = read_upload_log(&log_path)?;
        Ok(Remote {
            client,
            runtime,
            config,
            nodes: Mutex::new(HashMap::new()),
            cache: Mutex::new(BlockCache::default()),
            gets: AtomicU64::new(0),
            get_bytes: AtomicU64::new(0),
            hits: AtomicU64::new(0),
            uploaded: Mutex::new(uploaded),
            log_path,
        })
    }

    pub fn config(&self) -> &RemoteConfig {
        &self.config
    }

    fn key(&self, node: &str, name: &str) -> String {
        let prefix = self.config.prefix.trim_matches('/');
        if prefix.is_empty() {
            format!("{node}/{name}")
        } else {
            format!("{prefix}/{node}/{name}")
        }
    }

    /// Human-readable address of an object, for errors.
    fn url(&self, key: &str) -> PathBuf {
        PathBuf::from(format!("s3://{}/{key}", self.config.bucket))
    }

    pub fn name_node(&self, number: u16, name: &str) {
        lock(&self.nodes).insert(number, name.to_string());
    }

    /// The object holding another node's pack `pack` (node bits set).
    fn pack_key(&self, pack: u64) -> Result<String> {
        let number = node_of(pack);
        let name = lock(&self.nodes).get(&number).cloned();
        let name = name.ok_or_else(|| Error::Store {
            path: PathBuf::from(pack::pack_name(local_id(pack))),
            offset: 0,
            message: format!("pack of node number {number}, whose name this node was not told"),
        })?;
        Ok(self.key(&name, &pack::pack_name(local_id(pack))))
    }

    /// Every pack of the node whose bits of the pack id are `node`, as pack ids with those
    /// bits (one listing of its folder in the bucket).
    pub fn node_packs(&self, node: u64) -> Result<Vec<u64>> {
        use futures::TryStreamExt;
        let number = node_of(node);
        let name = lock(&self.nodes).get(&number).cloned();
        let Some(name) = name else {
            return Ok(Vec::new());
        };
        let folder = self.key(&name, "");
        let prefix = ObjectPath::from(folder.trim_end_matches('/'));
        let listed: Vec<object_store::ObjectMeta> = self
            .runtime
            .block_on(self.client.list(Some(&prefix)).try_collect())
            .map_err(|e| Error::io(self.url(&folder), remote_err(&folder, e)))?;
        let mut packs: Vec<u64> = listed
            .iter()
            .filter_map(|m| m.location.filename().and_then(pack::parse_pack_name))
            .map(|p| p | node)
            .collect();
        packs.sort_unstable();
        Ok(packs)
    }

    /// Where another node's pack is, for errors (its number when its name is unknown).
    pub fn display_path(&self, pack: u64) -> PathBuf {
        match self.pack_key(pack) {
            Ok(key) => self.url(&key),
            Err(_) => PathBuf::from(format!(
                "node {}: {}",
                node_of(pack),
                pack::pack_name(local_id(pack))
            )),
        }
    }

    /// Opens another node's pack for ranged reads (one HEAD for its size).
    pub fn open_pack(self: &Arc<Self>, pack: u64) -> Result<RemotePack> {
        let key = self.pack_key(pack)?;
        self.open_key(pack, key)
    }

    fn open_key(self: &Arc<Self>, pack: u64, key: String) -> Result<RemotePack> {
        let location = ObjectPath::from(key.as_str());
        let head = self
            .runtime
            .block_on(self.client.head(&location))
            .map_err(|e| {
                let not_found = matches!(e, object_store::Error::NotFound { .. });
                let err = remote_err(&key, e);
                if not_found {
                    Error::Store {
                        path: self.url(&key),
                        offset: 0,
                        message: "not in object storage yet: the node that received it has \
                                  not uploaded this pack (it does within seconds while it runs)"
                            .into(),
                    }
                } else {
                    Error::io(self.url(&key), err)
                }
            })?;
        Ok(RemotePack {
            remote: self.clone(),
            pack,
            key,
            location,
            size: head.size,
        })
    }

    fn fetch(
        &self,
        key: &str,
        location: &ObjectPath,
        range: std::ops::Range<u64>,
    ) -> std::io::Result<bytes::Bytes> {
        let got = self
            .runtime
            .block_on(self.client.get_range(location, range))
            .map_err(|e| remote_err(key, e))?;
        self.gets.fetch_add(1, Ordering::Relaxed);
        self.get_bytes
            .fetch_add(got.len() as u64, Ordering::Relaxed);
        Ok(got)
    }

    pub fn stats(&self) -> RemoteStats {
        let cache = lock(&self.cache);
        RemoteStats {
            gets: self.gets.load(Ordering::Relaxed),
            get_bytes: self.get_bytes.load(Ordering::Relaxed),
            hits: self.hits.load(Ordering::Relaxed),
            cache_bytes: cache.bytes,
            cache_limit: self.config.cache_bytes,
        }
    }

    /// Whole-object upload of a local pack, in parts (bounded memory).
    fn upload(&self, path: &Path, name: &str, size: u64) -> Result<()> {
        let key = self.key(&self.config.node, name);
        let location = ObjectPath::from(key.as_str());
        let file = File::open(path).map_err(|e| Error::io(path, e))?;
        let fail = |e: object_store::Error| Error::io(self.url(&key), remote_err(&key, e));
        if size as usize <= PART {
            let data = pack::read_at(&file, path, 0, size as usize)?;
            self.runtime
                .block_on(self.client.put(&location, PutPayload::from(data)))
                .map_err(fail)?;
            return Ok(());
        }
        self.runtime.block_on(async {
            let mut up = self.client.put_multipart(&location).await.map_err(fail)?;
            let mut at = 0u64;
            while at < size {
                let n = (PART as u64).min(size - at) as usize;
                let part = match pack::read_at(&file, path, at, n) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = up.abort().await;
                        return Err(e);
                    }
                };
                if let Err(e) = up.put_part(PutPayload::from(part)).await {
                    let _ = up.abort().await;
                    return Err(fail(e));
                }
                at += n as u64;
            }
            up.complete().await.map_err(fail)?;
            Ok(())
        })
    }

    fn delete(&self, name: &str) -> Result<()> {
        let key = self.key(&self.config.node, name);
        let location = ObjectPath::from(key.as_str());
        match self.runtime.block_on(self.client.delete(&location)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(Error::io(self.url(&key), remote_err(&key, e))),
        }
    }

    /// Records durably that the bucket holds `size` bytes of pack `name` (0: none), and
    /// whether the local copy is gone.
    fn confirm(&self, name: &str, size: u64, evicted: bool) -> Result<()> {
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .map_err(|e| Error::io(&self.log_path, e))?;
        let flag = if evicted { " evicted" } else { "" };
        f.write_all(format!("{name} {size}{flag}\n").as_bytes())
            .and_then(|_| f.sync_data())
            .map_err(|e| Error::io(&self.log_path, e))?;
        lock(&self.uploaded).insert(name.to_string(), Upload { size, evicted });
        Ok(())
    }

    fn upload_of(&self, name: &str) -> Option<Upload> {
        lock(&self.uploaded).get(name).copied()
    }

    /// This node's packs whose only copy is in the bucket: (name, size).
    fn evicted(&self) -> Vec<(String, u64)> {
        lock(&self.uploaded)
            .iter()
            .filter(|(_, u)| u.evicted && u.size > 0)
            .map(|(n, u)| (n.clone(), u.size))
            .collect()
    }

    /// One of this node's own packs, evicted from its disk: read from its own folder.
    pub fn open_own(self: &Arc<Self>, pack: u64) -> Result<RemotePack> {
        let key = self.key(&self.config.node, &pack::pack_name(pack));
        self.open_key(pack, key)
    }
}

/// `name size [evicted]` lines, the last one of a name winning; a torn last line is ignored
/// (its upload, or eviction, is simply done again).
fn read_upload_log(path: &Path) -> Result<HashMap<String, Upload>> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(Error::io(path, e)),
    };
    let mut out = HashMap::new();
    for line in text.lines() {
        let mut words = line.split(' ');
        let (Some(name), Some(size)) = (words.next(), words.next()) else {
            continue;
        };
        let evicted = match words.next() {
            None => false,
            Some("evicted") => true,
            Some(_) => continue,
        };
        if let Ok(size) = size.parse::<u64>() {
            out.insert(name.to_string(), Upload { size, evicted });
        }
    }
    Ok(out)
}

/// Names of this writer's packs the upload log knows (evicted ones are not on disk, and a
/// writer must never reuse their sequence numbers).
pub(super) fn logged_packs(packs_dir: &Path) -> Vec<u64> {
    read_upload_log(&packs_dir.join("uploads.log"))
        .map(|m| m.keys().filter_map(|n| pack::parse_pack_name(n)).collect())
        .unwrap_or_default()
}

/// Another node's pack, read by ranged GETs of whole blocks through the cache.
pub struct RemotePack {
    remote: Arc<Remote>,
    pack: u64,
    key: String,
    location: ObjectPath,
    size: u64,
}

impl RemotePack {
    pub fn url(&self) -> PathBuf {
        self.remote.url(&self.key)
    }

    /// Block `b` from the cache, unless it is shorter than this object holds there: a
    /// pack's last block may still grow (a pack a dead writer left open is uploaded, then
    /// appended to and uploaded again when that writer comes back).
    fn cached(&self, b: u64) -> Option<Arc<Vec<u8>>> {
        let want = BLOCK.min(self.size.saturating_sub(b * BLOCK));
        let mut cache = lock(&self.remote.cache);
        let d = cache.get((self.pack, b))?;
        if (d.len() as u64) < want {
            cache.drop_block((self.pack, b));
            return None;
        }
        Some(d)
    }

    /// Block `b`, from the cache or fetched with the blocks after it up to `last`.
    fn block(&self, b: u64, last: u64) -> std::io::Result<Arc<Vec<u8>>> {
        if let Some(d) = self.cached(b) {
            self.remote.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(d);
        }
        let mut end = b + 1;
        while end <= last && self.cached(end).is_none() {
            end += 1;
        }
        let range = b * BLOCK..(end * BLOCK).min(self.size);
        let got = self.remote.fetch(&self.key, &self.location, range)?;
        let limit = self.remote.config.cache_bytes;
        let mut first = None;
        for (i, piece) in got.chunks(BLOCK as usize).enumerate() {
            let data = Arc::new(piece.to_vec());
            lock(&self.remote.cache).put((self.pack, b + i as u64), data.clone(), limit);
            if i == 0 {
                first = Some(data);
            }
        }
        first.ok_or_else(|| std::io::Error::other(format!("{}: empty range", self.key)))
    }
}

impl PackRead for RemotePack {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        let end = offset + buf.len() as u64;
        if end > self.size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("{}: read past the end of the object", self.key),
            ));
        }
        if buf.is_empty() {
            return Ok(());
        }
        let last = (end - 1) / BLOCK;
        let mut at = offset;
        while at < end {
            let b = at / BLOCK;
            let data = self.block(b, last)?;
            let from = (at - b * BLOCK) as usize;
            let n = (data.len() - from).min((end - at) as usize);
            let dst = (at - offset) as usize;
            buf[dst..dst + n].copy_from_slice(&data[from..from + n]);
            at += n as u64;
        }
        Ok(())
    }

    fn size(&self) -> std::io::Result<u64> {
        Ok(self.size)
    }
}

impl Store {
    /// Reads other nodes' packs from, and uploads this node's packs to, object storage.
    pub fn set_remote(&mut self, remote: Remote) {
        self.remote = Some(Arc::new(remote));
    }

    pub(super) fn remote(&self) -> Result<&Arc<Remote>> {
        self.remote.as_ref().ok_or_else(|| Error::Store {
            path: self.root.clone(),
            offset: 0,
            message: "another node's pack, and this store has no object storage".into(),
        })
    }

    /// Packs of node `number` are read from `<prefix>/<name>/`.
    pub fn name_node(&self, number: u16, name: &str) -> Result<()> {
        self.remote()?.name_node(number, name);
        Ok(())
    }

    pub fn remote_stats(&self) -> Option<RemoteStats> {
        self.remote.as_ref().map(|r| r.stats())
    }

    /// Uploads every local pack no writer appends to any more and the bucket does not hold
    /// whole (until `budget` bytes went up, if given), then removes from the bucket the
    /// packs removed here. Stops at the first failure (reported, not raised: the caller
    /// retries later).
    pub fn upload_step(&self, budget: Option<u64>) -> Result<UploadReport> {
        let remote = self.remote()?.clone();
        let mut rep = UploadReport::default();
        let listed = pack::list_packs(&self.packs_dir)?;
        let uncommitted = super::compact::uncommitted(&self.packs_dir)?;
        let appending = self.appending(&listed);
        let mut present = std::collections::HashSet::new();
        for (p, path) in &listed {
            let name = pack::pack_name(*p);
            present.insert(name.clone());
            let Ok(size) = std::fs::metadata(path).map(|m| m.len()) else {
                continue; // removed since it was listed
            };
            let done = remote.upload_of(&name).map(|u| u.size);
            if done == Some(size) {
                continue;
            }
            let open = appending.contains(self, *p);
            let spent = budget.is_some_and(|b| rep.bytes >= b);
            if open || uncommitted.contains_key(p) || rep.error.is_some() || spent {
                let waiting = size - done.unwrap_or(0).min(size);
                rep.pending_packs += 1;
                rep.pending_bytes += waiting;
                if !open {
                    rep.sealed_pending_bytes += waiting;
                }
                continue;
            }
            match remote
                .upload(path, &name, size)
                .and_then(|_| remote.confirm(&name, size, false))
            {
                Ok(()) => {
                    rep.uploaded += 1;
                    rep.bytes += size;
                }
                Err(e) => {
                    rep.error = Some(e.to_string());
                    rep.pending_packs += 1;
                    rep.pending_bytes += size;
                }
            }
        }
        if rep.error.is_none() && rep.pending_packs == 0 {
            self.remove_gone(&remote, &present, &mut rep)?;
        }
        Ok(rep)
    }

    /// Which of the `listed` packs a writer may still append to (see [`Appending`]).
    fn appending(&self, listed: &[(u64, PathBuf)]) -> Appending {
        let mut last_of = HashMap::new();
        for (p, _) in listed {
            last_of.insert(p >> 32, *p);
        }
        let w = self.writer.as_ref();
        Appending {
            own: w.map(|w| u64::from(w.id)),
            own_active: w.and_then(|w| lock(&w.state).active.as_ref().map(|a| a.pack)),
            last_of,
        }
    }

    /// Every pack of this node, on its disk or evicted to the bucket, by id.
    pub(super) fn listing(&self) -> Result<Vec<(u64, Listed)>> {
        let mut out: Vec<(u64, Listed)> = pack::list_packs(&self.packs_dir)?
            .into_iter()
            .map(|(p, path)| (p, Listed::Local(path)))
            .collect();
        if let Some(remote) = &self.remote {
            let here: std::collections::HashSet<u64> = out.iter().map(|(p, _)| *p).collect();
            for (name, size) in remote.evicted() {
                if let Some(p) = pack::parse_pack_name(&name).filter(|p| !here.contains(p)) {
                    out.push((p, Listed::Evicted(size)));
                }
            }
            out.sort_by_key(|(p, _)| *p);
        }
        Ok(out)
    }

    /// Removes local copies of packs the bucket holds whole, oldest first, until this
    /// node's packs take at most `keep` bytes of its disk. Only a pack nothing appends to
    /// any more and that the index covers to its end (`indexed`: pack -> mark) goes: its
    /// records are then read from the bucket, and a catch-up never needs them. The log
    /// says `evicted` (fsynced) before the file is removed, so a kill in between leaves a
    /// local copy that the next step removes.
    pub fn evict_step(&self, keep: u64, indexed: &HashMap<u64, u64>) -> Result<EvictReport> {
        let remote = self.remote()?.clone();
        let listed = pack::list_packs(&self.packs_dir)?;
        let mut rep = EvictReport::default();
        let mut sizes = Vec::with_capacity(listed.len());
        for (p, path) in &listed {
            let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
            rep.local_bytes += size;
            sizes.push((*p, path, size));
        }
        let appending = self.appending(&listed);
        for (p, path, size) in sizes {
            if rep.local_bytes <= keep {
                break;
            }
            let name = pack::pack_name(p);
            let whole = remote
                .upload_of(&name)
                .is_some_and(|u| u.size == size && size > 0);
            let covered = indexed.get(&p).is_some_and(|&m| m >= size);
            if !whole || !covered || appending.contains(self, p) {
                continue;
            }
            remote.confirm(&name, size, true)?;
            std::fs::remove_file(path).map_err(|e| Error::io(path, e))?;
            lock(&self.files).remove(&p);
            rep.evicted += 1;
            rep.bytes += size;
            rep.local_bytes -= size;
        }
        if rep.evicted > 0 {
            super::sync_dir(&self.packs_dir)?;
        }
        Ok(rep)
    }

    /// Removes from the bucket the packs removed here, once nothing is left to upload: the
    /// records they held were moved into packs the bucket now holds.
    fn remove_gone(
        &self,
        remote: &Remote,
        present: &std::collections::HashSet<String>,
        rep: &mut UploadReport,
    ) -> Result<()> {
        // An evicted pack is not here either, but the bucket holds its only copy.
        let gone: Vec<String> = lock(&remote.uploaded)
            .iter()
            .filter(|(name, u)| u.size > 0 && !u.evicted && !present.contains(*name))
            .map(|(name, _)| name.clone())
            .collect();
        for name in gone {
            if let Err(e) = remote
                .delete(&name)
                .and_then(|_| remote.confirm(&name, 0, false))
            {
                rep.error = Some(e.to_string());
                break;
            }
            rep.deleted += 1;
        }
        Ok(())
    }
}

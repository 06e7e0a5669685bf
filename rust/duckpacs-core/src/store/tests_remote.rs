//! Storage layer tests of packs in object storage: uploads, another node's reads by ranged
//! GETs, the upload log across a restart, removals. The object store is the crate's own
//! in-memory one (the Python tests run the same code against a real S3 endpoint).

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;

use object_store::memory::InMemory;
use object_store::ObjectStore;

use super::pack;
use super::remote::NODE_SHIFT;
use super::tests::native;
use super::*;

fn config(node: &str) -> RemoteConfig {
    RemoteConfig {
        endpoint: "http://memory".into(),
        bucket: "b".into(),
        prefix: "archive".into(),
        region: "us-east-1".into(),
        access_key: "k".into(),
        secret_key: "s".into(),
        node: node.into(),
        cache_bytes: 8 << 20,
        timeout: std::time::Duration::from_secs(5),
    }
}

fn open(dir: &std::path::Path, node: &str, bucket: &Arc<InMemory>) -> Store {
    let opts = Options {
        dict_samples: 3,
        ..Options::default()
    };
    let mut s = Store::open(dir, Some(1), opts).unwrap();
    let client: Arc<dyn ObjectStore> = bucket.clone();
    s.set_remote(Remote::with_client(client, config(node), &dir.join("packs")).unwrap());
    s
}

fn objects(bucket: &InMemory) -> Vec<String> {
    use futures::StreamExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut names: Vec<String> = bucket
            .list(None)
            .map(|m| m.unwrap().location.to_string())
            .collect()
            .await;
        names.sort();
        names
    })
}

#[test]
fn another_node_reads_uploaded_packs_by_ranges_with_dictionaries() {
    let bucket = Arc::new(InMemory::new());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path(), "node-a", &bucket);
    let b = open(db.path(), "node-b", &bucket);
    // Enough headers of one series for a dictionary: later records name it by location.
    let items: Vec<_> = (0..8)
        .map(|n| native("1.2.840.9", n, 2, 300, 400))
        .collect();
    let locs: Vec<Location> = items
        .iter()
        .map(|(buf, l)| a.put(buf, Some(l)).unwrap())
        .collect();
    assert!(
        a.meta(locs[7]).unwrap().dict_id != 0,
        "no dictionary trained"
    );
    // The open pack is not uploaded: it is still appended to.
    let r = a.upload_step(None).unwrap();
    assert_eq!((r.uploaded, r.pending_packs), (0, 1), "{r:?}");
    a.seal().unwrap();
    let r = a.upload_step(None).unwrap();
    assert_eq!(
        (r.uploaded, r.pending_packs, &r.error),
        (1, 0, &None),
        "{r:?}"
    );
    assert_eq!(objects(&bucket), vec!["archive/node-a/w00001-00000001.dpk"]);
    // Node B reads A's instances through A's number in the pack id.
    b.name_node(3, "node-a").unwrap();
    let far = |l: Location| Location {
        pack: l.pack | (3u64 << NODE_SHIFT),
        ..l
    };
    for ((buf, layout), loc) in items.iter().zip(&locs) {
        assert_eq!(&b.get(far(*loc)).unwrap(), buf);
        let px = layout.pixel.as_ref().unwrap();
        assert_eq!(b.header_bytes(far(*loc)).unwrap(), &buf[..px.element.start]);
    }
    let before = b.remote_stats().unwrap();
    let frame = b.get_frame(far(locs[5]), 1).unwrap();
    assert_eq!(frame, a.get_frame(locs[5], 1).unwrap());
    let mut streamed = Vec::new();
    b.open_instance(far(locs[2]))
        .unwrap()
        .read_to_end(&mut streamed)
        .unwrap();
    assert_eq!(streamed, items[2].0);
    assert_eq!(
        b.meta(far(locs[4])).unwrap().sha256,
        a.meta(locs[4]).unwrap().sha256
    );
    let after = b.remote_stats().unwrap();
    assert!(
        after.hits > before.hits,
        "the blocks read before were not cached"
    );
    assert!(after.cache_bytes <= after.cache_limit);
}

#[test]
fn a_frame_fetches_blocks_around_it_not_the_whole_pack() {
    let bucket = Arc::new(InMemory::new());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path(), "a", &bucket);
    let b = open(db.path(), "b", &bucket);
    // Eight instances of 4 frames of 1.5 MB: a 48 MB pack.
    let locs: Vec<Location> = (0..8)
        .map(|n| {
            let (buf, l) = native("5.5", n, 4, 1000, 750);
            a.put(&buf, Some(&l)).unwrap()
        })
        .collect();
    a.seal().unwrap();
    a.upload_step(None).unwrap();
    b.name_node(1, "a").unwrap();
    let far = Location {
        pack: locs[6].pack | (1u64 << NODE_SHIFT),
        ..locs[6]
    };
    assert_eq!(
        b.get_frame(far, 3).unwrap(),
        a.get_frame(locs[6], 3).unwrap()
    );
    let st = b.remote_stats().unwrap();
    assert!(st.get_bytes < 8 << 20, "{st:?}");
}

#[test]
fn uploads_resume_after_a_restart_and_removed_packs_leave_the_bucket() {
    let bucket = Arc::new(InMemory::new());
    let da = tempfile::tempdir().unwrap();
    {
        let a = open(da.path(), "a", &bucket);
        for n in 0..3 {
            let (buf, l) = native("6.6", n, 1, 64, 64);
            a.put(&buf, Some(&l)).unwrap();
            a.seal().unwrap();
        }
        // Killed before any upload: nothing is in the bucket, the log is empty.
    }
    let a = open(da.path(), "a", &bucket);
    let r = a.upload_step(None).unwrap();
    // The writer reopened its last pack (it appends there again): two are sealed.
    assert_eq!((r.uploaded, r.pending_packs), (2, 1), "{r:?}");
    a.seal().unwrap();
    assert_eq!(a.upload_step(None).unwrap().uploaded, 1);
    assert_eq!(
        a.upload_step(None).unwrap().uploaded,
        0,
        "the log remembers"
    );
    assert_eq!(objects(&bucket).len(), 3);
    // A pack removed here (compaction, densifying) is removed from the bucket.
    std::fs::remove_file(da.path().join("packs/w00001-00000001.dpk")).unwrap();
    let r = a.upload_step(None).unwrap();
    assert_eq!(r.deleted, 1, "{r:?}");
    assert_eq!(objects(&bucket).len(), 2);
}

#[test]
fn an_unknown_node_or_a_pack_not_uploaded_is_a_clear_error() {
    let bucket = Arc::new(InMemory::new());
    let db = tempfile::tempdir().unwrap();
    let b = open(db.path(), "b", &bucket);
    let loc = Location {
        pack: (2u64 << NODE_SHIFT) | (1u64 << 32) | 1,
        offset: 64,
        length: 100,
    };
    let e = b.get(loc).unwrap_err().to_string();
    assert!(e.contains("node number 2"), "{e}");
    b.name_node(2, "c").unwrap();
    let e = b.get(loc).unwrap_err().to_string();
    assert!(e.contains("not in object storage yet"), "{e}");
    assert!(e.contains("s3://b/archive/c/w00001-00000001.dpk"), "{e}");
}

#[test]
fn evicted_packs_are_read_walked_and_never_reused_or_deleted_from_the_bucket() {
    let bucket = Arc::new(InMemory::new());
    let da = tempfile::tempdir().unwrap();
    let items: Vec<_> = (0..6).map(|n| native("7.7", n, 1, 200, 200)).collect();
    let mut locs = Vec::new();
    {
        let a = open(da.path(), "a", &bucket);
        for (buf, l) in &items {
            locs.push(a.put(buf, Some(l)).unwrap());
            a.seal().unwrap();
        }
        a.upload_step(None).unwrap();
        let marks: HashMap<u64, u64> = a.low_water().into_iter().collect();
        // Not indexed to its end: kept whatever the limit.
        let r = a.evict_step(0, &HashMap::new()).unwrap();
        assert_eq!(r.evicted, 0);
        let r = a.evict_step(0, &marks).unwrap();
        assert_eq!((r.evicted, r.local_bytes), (6, 0), "{r:?}");
        assert_eq!(pack::list_packs(&da.path().join("packs")).unwrap().len(), 0);
        // Read back from the bucket, frames too, and walked by scan and tail.
        for ((buf, _), loc) in items.iter().zip(&locs) {
            assert_eq!(&a.get(*loc).unwrap(), buf);
        }
        assert_eq!(a.scan().unwrap().len(), 6);
        assert_eq!(a.tail(&HashMap::new()).unwrap().instances.len(), 6);
        let caught_up = a.tail(&marks).unwrap();
        assert!(caught_up.instances.is_empty());
        // The bucket keeps what is evicted (an upload step removes only packs gone).
        let r = a.upload_step(None).unwrap();
        assert_eq!((r.deleted, r.pending_packs), (0, 0), "{r:?}");
        assert_eq!(objects(&bucket).len(), 6);
    }
    // Reopened, the writer starts past the evicted packs: no name is written twice.
    let a = open(da.path(), "a", &bucket);
    let (buf, l) = native("7.7", 9, 1, 200, 200);
    let loc = a.put(&buf, Some(&l)).unwrap();
    assert!(locs.iter().all(|old| old.pack != loc.pack));
    assert_eq!(a.get(locs[0]).unwrap(), items[0].0);
}

#[test]
fn another_node_finds_a_dictionary_its_writer_moved_by_compaction() {
    let bucket = Arc::new(InMemory::new());
    let (da, db) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = open(da.path(), "a", &bucket);
    let b = open(db.path(), "b", &bucket);
    let items: Vec<_> = (0..8).map(|n| native("8.8", n, 1, 64, 64)).collect();
    let locs: Vec<Location> = items
        .iter()
        .map(|(buf, l)| a.put(buf, Some(l)).unwrap())
        .collect();
    assert!(a.meta(locs[7]).unwrap().dict_id != 0);
    for loc in &locs[..4] {
        a.delete(*loc).unwrap();
    }
    a.seal().unwrap();
    a.upload_step(None).unwrap(); // B could read the records where they were
    let (buf, l) = native("9.9", 0, 1, 16, 16); // the writer moves on to a new pack
    a.put(&buf, Some(&l)).unwrap();
    let report = a.compact(0.2, |_, _| {}).unwrap();
    assert!(report.packs_rewritten > 0, "{report:?}");
    a.seal().unwrap();
    let r = a.upload_step(None).unwrap();
    assert!(r.deleted > 0, "the compacted pack left the bucket: {r:?}");
    b.name_node(4, "a").unwrap();
    let moved: HashMap<Location, Location> = report.moved.iter().copied().collect();
    let new7 = moved[&locs[7]];
    let far = Location {
        pack: new7.pack | (4u64 << NODE_SHIFT),
        ..new7
    };
    assert_eq!(b.get(far).unwrap(), items[7].0);
}

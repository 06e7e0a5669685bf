//! Storage layer, header dictionaries: zstd dictionaries trained per series from a few
//! headers, written as records of their own, loaded (bounded cache) for reading.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::format::*;
use super::pack::integrity;
use super::record::{self, DictRef, HeaderDict};
use super::*;
use crate::error::Result;
use crate::layout::InstanceLayout;

#[derive(Default)]
pub(super) struct Dicts {
    /// Dictionaries loaded for reading or writing, by id (bounded, see `MAX_DICTS`).
    pub(super) by_id: HashMap<u64, DictRef>,
    /// The dictionary of each series this writer trained or used (bounded).
    pub(super) by_series: HashMap<String, DictRef>,
    /// Every series this writer trained a dictionary for: (id, location), to reload it
    /// after it left `by_series`.
    pub(super) known: HashMap<String, (u64, Location)>,
    pub(super) samples: HashMap<String, Vec<Vec<u8>>>,
    /// Series for which training failed or is under way.
    pub(super) no_train: HashSet<String>,
}

impl Store {
    pub(super) fn series_dict(&self, layout: Option<&InstanceLayout>) -> Option<DictRef> {
        let series = &layout?.series_instance_uid;
        let known = {
            let d = lock(&self.dicts);
            if let Some(dict) = d.by_series.get(series) {
                return Some(dict.clone());
            }
            *d.known.get(series)?
        };
        // Evicted earlier: reload it (a dictionary that cannot be read is simply not used).
        let meta = Meta {
            dict_id: known.0,
            dict_loc: known.1,
            ..Meta::default()
        };
        let dict = self.dictionary(&meta).ok().flatten()?;
        let mut d = lock(&self.dicts);
        if d.by_series.len() >= MAX_DICTS {
            d.by_series.clear();
        }
        d.by_series.insert(series.clone(), dict.clone());
        Some(dict)
    }

    /// Keeps a header sample of a series; trains and stores its dictionary once enough.
    pub(super) fn learn(&self, series: &str, header: &[u8]) -> Result<()> {
        if self.opts.dict_samples == 0 || series.is_empty() {
            return Ok(());
        }
        let samples = {
            let mut d = lock(&self.dicts);
            if d.by_series.contains_key(series)
                || d.known.contains_key(series)
                || d.no_train.contains(series)
            {
                return Ok(());
            }
            if d.samples.len() >= 256 && !d.samples.contains_key(series) {
                // Bound memory: forget the pending samples of other series.
                d.samples.clear();
            }
            let v = d.samples.entry(series.to_string()).or_default();
            v.push(header[..header.len().min(256 << 10)].to_vec());
            if v.len() < self.opts.dict_samples {
                return Ok(());
            }
            d.no_train.insert(series.to_string());
            d.samples.remove(series).unwrap_or_default()
        };
        let Some(raw) =
            record::build_dictionary(&samples, self.opts.dict_size, self.opts.levels.header)
        else {
            return Ok(()); // Nothing to learn from: this series stays dictionary-less.
        };
        let rec = record::encode_dictionary(&raw, series);
        let loc = self.append(&[&rec], false)?[0];
        let dict = Arc::new(HeaderDict::new(raw, loc, self.opts.levels.header));
        let mut d = lock(&self.dicts);
        if d.by_id.len() >= MAX_DICTS {
            d.by_id.clear();
        }
        if d.by_series.len() >= MAX_DICTS {
            d.by_series.clear();
        }
        d.by_id.insert(dict.id, dict.clone());
        d.known.insert(series.to_string(), (dict.id, dict.loc));
        d.by_series.insert(series.to_string(), dict);
        d.no_train.remove(series);
        Ok(())
    }

    /// Dictionary `id` now lives at `loc` (densifying moved it): records encoded from now
    /// on name the new location.
    pub(super) fn dict_moved(&self, id: u64, loc: Location) {
        let mut d = lock(&self.dicts);
        let moved = d.by_id.get(&id).map(|old| {
            Arc::new(HeaderDict::new(
                old.raw.clone(),
                loc,
                self.opts.levels.header,
            ))
        });
        if let Some(new) = &moved {
            d.by_id.insert(id, new.clone());
        }
        for (_, known) in d.known.iter_mut().filter(|(_, k)| k.0 == id) {
            known.1 = loc;
        }
        let series: Vec<String> = d
            .by_series
            .iter()
            .filter(|(_, v)| v.id == id)
            .map(|(k, _)| k.clone())
            .collect();
        for s in series {
            match &moved {
                Some(new) => {
                    d.by_series.insert(s, new.clone());
                }
                None => {
                    d.by_series.remove(&s);
                }
            }
        }
    }

    pub(super) fn dictionary(&self, meta: &Meta) -> Result<Option<DictRef>> {
        let id = meta.dict_id;
        if id == 0 {
            return Ok(None);
        }
        if let Some(d) = lock(&self.dicts).by_id.get(&id) {
            return Ok(Some(d.clone()));
        }
        if let Ok(Some(d)) = self.load_dict(self.forward(meta.dict_loc), id) {
            return Ok(Some(d));
        }
        // The dictionary moved (compaction): find it by id.
        let missing = || {
            integrity(
                &self.pack_path(meta.dict_loc.pack),
                meta.dict_loc.offset,
                format!("dictionary {id:016x} not found"),
            )
        };
        let node = super::remote::node_bits(meta.dict_loc.pack);
        let found = if node == 0 {
            self.find_dict(id)?
        } else {
            self.find_remote_dict(node, id)?
        };
        let loc = found.ok_or_else(missing)?;
        self.load_dict(loc, id)?.ok_or_else(missing).map(Some)
    }

    /// Loads dictionary `id` from the record at `loc` (and caches it); `None` if that
    /// record is not this dictionary.
    pub(super) fn load_dict(&self, loc: Location, id: u64) -> Result<Option<DictRef>> {
        let (rec, p) = self.read_record(loc)?;
        if p.header.kind != Kind::Dictionary || p.meta.chunks.len() != 1 || p.meta.dict_id != id {
            return Ok(None);
        }
        let c = &p.meta.chunks[0];
        let raw = record::decode_chunk(record::chunk_bytes(&rec, c).unwrap_or(&[]), c, None)
            .map_err(|m| integrity(&self.pack_path(loc.pack), loc.offset, m))?;
        if record::dict_id(&raw) != id {
            return Ok(None);
        }
        let d = Arc::new(HeaderDict::new(raw, loc, self.opts.levels.header));
        let mut dicts = lock(&self.dicts);
        if dicts.by_id.len() >= MAX_DICTS {
            dicts.by_id.clear();
        }
        dicts.by_id.insert(d.id, d.clone());
        Ok(Some(d))
    }

    pub(super) fn find_dict(&self, id: u64) -> Result<Option<Location>> {
        let mut found = None;
        self.walk_all(|loc, h, meta| {
            if h.kind == Kind::Dictionary && meta.is_some_and(|m| m.dict_id == id) {
                found = Some(loc);
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// [`Store::find_dict`] in another node's packs (`node`: its bits of the pack id): a
    /// compaction there moved the dictionary its records name. Rare (the dictionary is then
    /// cached by id), so it lists that node's folder and walks its packs, newest first.
    fn find_remote_dict(&self, node: u64, id: u64) -> Result<Option<Location>> {
        let remote = self.remote()?.clone();
        for pack in remote.node_packs(node)?.into_iter().rev() {
            let file = self.file(pack)?;
            let path = self.source_path(pack);
            let mut walker = super::pack::Walker::new(&*file, &path)?;
            while let Some(step) = walker.next_step()? {
                let super::pack::Step::Record { offset, header } = step else {
                    continue;
                };
                if header.kind != Kind::Dictionary {
                    continue;
                }
                let loc = Location {
                    pack,
                    offset,
                    length: header.record_len,
                };
                if self.read_head(loc).is_ok_and(|p| p.meta.dict_id == id) {
                    return Ok(Some(loc));
                }
            }
        }
        Ok(None)
    }
}

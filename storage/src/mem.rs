//! An in-memory [`Store`] for tests.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::Mutex;

use crate::{Cf, Store, StoreError, StoreView, Visitor, WriteBatch};

/// Entries keyed by (column family, key).
type Entries = BTreeMap<(Cf, Vec<u8>), Vec<u8>>;

/// Entries copied out per lock hold while iterating: the visitor runs
/// without the lock (so it may read the store), and memory stays bounded by
/// this many entries whatever the column's size.
const SCAN_CHUNK_ENTRIES: usize = 256;

#[derive(Default)]
pub struct MemStore {
    map: Mutex<Entries>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries of `cf` (for tests that check what pruning left).
    pub fn entries(&self, cf: Cf) -> usize {
        let m = self.map.lock().expect("poisoned");
        m.range((cf, Vec::new())..)
            .take_while(|((c, _), _)| *c == cf)
            .count()
    }
}

fn visit(m: &Entries, cf: Cf, f: &mut Visitor<'_>) -> Result<(), StoreError> {
    for ((c, k), v) in m.range((cf, Vec::new())..) {
        if *c != cf {
            break;
        }
        f(k, v)?;
    }
    Ok(())
}

impl Store for MemStore {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .map
            .lock()
            .expect("poisoned")
            .get(&(cf, key.to_vec()))
            .cloned())
    }

    fn write(&self, batch: WriteBatch) -> Result<(), StoreError> {
        let mut m = self.map.lock().expect("poisoned");
        for (cf, k, v) in batch.ops {
            match v {
                Some(v) => {
                    m.insert((cf, k), v);
                }
                None => {
                    m.remove(&(cf, k));
                }
            }
        }
        for (cf, from, to) in batch.ranges {
            let doomed: Vec<(Cf, Vec<u8>)> = m
                .range((cf, from)..(cf, to))
                .map(|(k, _)| k.clone())
                .collect();
            for k in doomed {
                m.remove(&k);
            }
        }
        Ok(())
    }

    fn for_each_range(
        &self,
        cf: Cf,
        from: &[u8],
        to: Option<&[u8]>,
        f: &mut Visitor<'_>,
    ) -> Result<(), StoreError> {
        let mut start = Bound::Included((cf, from.to_vec()));
        let mut chunk = Vec::with_capacity(SCAN_CHUNK_ENTRIES);
        loop {
            {
                let m = self.map.lock().expect("poisoned");
                let range = m
                    .range((start.clone(), Bound::Unbounded))
                    .take_while(|((c, k), _)| *c == cf && to.is_none_or(|t| k.as_slice() < t))
                    .take(SCAN_CHUNK_ENTRIES);
                chunk.extend(range.map(|((_, k), v)| (k.clone(), v.clone())));
            }
            let Some((last, _)) = chunk.last() else {
                return Ok(());
            };
            start = Bound::Excluded((cf, last.clone()));
            let full = chunk.len() == SCAN_CHUNK_ENTRIES;
            for (k, v) in chunk.drain(..) {
                f(&k, &v)?;
            }
            if !full {
                return Ok(());
            }
        }
    }

    fn with_view(
        &self,
        f: &mut dyn FnMut(&dyn StoreView) -> Result<(), StoreError>,
    ) -> Result<(), StoreError> {
        // Tests only: a copy is the simplest consistent view.
        let copy = self.map.lock().expect("poisoned").clone();
        f(&MemView(copy))
    }
}

struct MemView(Entries);

impl StoreView for MemView {
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.0.get(&(cf, key.to_vec())).cloned())
    }
    fn for_each(&self, cf: Cf, f: &mut Visitor<'_>) -> Result<(), StoreError> {
        visit(&self.0, cf, f)
    }
}

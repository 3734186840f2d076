//! An in-memory [`Store`] for tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::{Cf, Store, StoreError, Visitor, WriteBatch};

/// Entries keyed by (column family, key).
type Entries = BTreeMap<(Cf, Vec<u8>), Vec<u8>>;

#[derive(Default)]
pub struct MemStore {
    map: Mutex<Entries>,
}

impl MemStore {
    pub fn new() -> Self {
        Self::default()
    }
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
        Ok(())
    }

    fn for_each(&self, cf: Cf, f: &mut Visitor<'_>) -> Result<(), StoreError> {
        let m = self.map.lock().expect("poisoned");
        for ((c, k), v) in m.range((cf, Vec::new())..) {
            if *c != cf {
                break;
            }
            f(k, v)?;
        }
        Ok(())
    }
}

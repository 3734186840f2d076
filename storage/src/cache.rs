//! A bounded cache of committed accounts in front of the state column.
//!
//! Admission reads the committed nonce of every transaction's sender, and
//! settlement reads it again for every sender of a commit; without a cache
//! each read is a RocksDB point lookup. [`crate::ChainStore::account`] asks
//! this cache first, and [`crate::ChainStore::commit`] writes the new value
//! of every account a commit touched into it, right after the commit's write
//! batch returned.
//!
//! Eviction is CLOCK (second chance): a hit sets the entry's reference bit;
//! the hand clears set bits and evicts the first entry whose bit is clear.
//! Entries enter with the bit clear (whether a read missed or a commit wrote
//! them), so a block's one-off recipients go before accounts read twice.
//!
//! ## Coherence
//!
//! The cache never answers a value older than the last commit whose write
//! returned:
//!
//! ```text
//!  commit:  store.write(batch) ─▶ lock ─▶ upsert touched accounts, generation += 1 ─▶ unlock
//!  reader:  lock ─▶ hit? answer : remember generation g ─▶ unlock
//!           ─▶ store.get ─▶ lock ─▶ insert only if generation == g ─▶ unlock
//! ```
//!
//! A reader's store value can predate a commit that finished while it read;
//! that commit bumped the generation, so the value is answered (it was
//! current when the read began) but not cached. A value cached before the
//! commit's upsert is overwritten by it. Between a commit's write and its
//! upsert, readers get the previous commit's values: that commit has not
//! returned yet, so nothing else in the node (head, receipts) shows it
//! either. A failed write invalidates the touched accounts instead.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use velox_exec::hash::KeyHashBuilder;
use velox_exec::{Account, AccountId};

/// Default of `[storage] account_cache_entries`: 65,536 accounts, about
/// 7 MiB (key, value, slot and index entry are ~110 bytes each), enough for
/// the senders of several seconds of traffic at 10k tx/s.
pub const ACCOUNT_CACHE_ENTRIES_DEFAULT: usize = 65_536;
/// Largest accepted `account_cache_entries` (slots are indexed by `u32`;
/// 16M entries take ~1.7 GiB).
pub const ACCOUNT_CACHE_ENTRIES_MAX: usize = 1 << 24;
const _: () = assert!(ACCOUNT_CACHE_ENTRIES_DEFAULT <= ACCOUNT_CACHE_ENTRIES_MAX);
const _: () = assert!(ACCOUNT_CACHE_ENTRIES_MAX <= u32::MAX as usize);

/// Counters and size of an [`AccountCache`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AccountCacheStats {
    pub hits: u64,
    pub misses: u64,
    /// Accounts cached now.
    pub entries: usize,
    /// The bound on `entries`.
    pub entries_max: usize,
}

/// What a lookup found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lookup {
    Hit(Account),
    /// Read the store, then offer the value back with [`AccountCache::fill`]
    /// and this ticket.
    Miss(FillTicket),
}

/// The commit generation a miss saw; a fill with a stale ticket is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FillTicket(u64);

struct Slot {
    id: AccountId,
    account: Account,
    /// Set by a hit, cleared by the passing CLOCK hand.
    referenced: bool,
}

struct Inner {
    /// Account → its slot. Invariant: `index.len() == slots.len() -
    /// free.len()`, and `index[slots[i].id] == i` for every slot not in
    /// `free`.
    index: HashMap<AccountId, u32, KeyHashBuilder>,
    slots: Vec<Slot>,
    /// Slots emptied by invalidation, reused before the hand evicts.
    free: Vec<u32>,
    /// The CLOCK hand: next slot to consider for eviction.
    hand: usize,
    /// Bumped by every commit (and invalidation); see the module docs.
    generation: u64,
}

/// See the module docs.
pub struct AccountCache {
    inner: Mutex<Inner>,
    entries_max: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl AccountCache {
    /// A cache of at most `entries_max` accounts (1..=[`ACCOUNT_CACHE_ENTRIES_MAX`]).
    pub fn new(entries_max: usize) -> Self {
        assert!(
            (1..=ACCOUNT_CACHE_ENTRIES_MAX).contains(&entries_max),
            "account cache entries {entries_max} outside 1..={ACCOUNT_CACHE_ENTRIES_MAX}"
        );
        Self {
            inner: Mutex::new(Inner {
                // Allocated up front: growing the index rehashes it while a
                // commit holds the lock.
                index: HashMap::with_capacity_and_hasher(entries_max, KeyHashBuilder::default()),
                slots: Vec::with_capacity(entries_max),
                free: Vec::new(),
                hand: 0,
                generation: 0,
            }),
            entries_max,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    pub fn get(&self, id: &AccountId) -> Lookup {
        let mut g = self.inner.lock().expect("poisoned");
        let found = g.index.get(id).copied();
        match found {
            Some(i) => {
                let s = &mut g.slots[i as usize];
                s.referenced = true;
                let a = s.account;
                drop(g);
                self.hits.fetch_add(1, Ordering::Relaxed);
                Lookup::Hit(a)
            }
            None => {
                let t = FillTicket(g.generation);
                drop(g);
                self.misses.fetch_add(1, Ordering::Relaxed);
                Lookup::Miss(t)
            }
        }
    }

    /// Caches `account` as read from the store after the miss that gave
    /// `ticket`, unless a commit or invalidation happened since.
    pub fn fill(&self, id: &AccountId, account: Account, ticket: FillTicket) {
        let mut g = self.inner.lock().expect("poisoned");
        if g.generation != ticket.0 || g.index.contains_key(id) {
            return;
        }
        g.insert(self.entries_max, *id, account, false);
    }

    /// Writes the values a durable commit gave to the accounts it touched.
    /// Call only after the commit's write returned.
    pub fn apply_commit(&self, accounts: impl IntoIterator<Item = (AccountId, Account)>) {
        let mut g = self.inner.lock().expect("poisoned");
        g.generation += 1;
        for (id, a) in accounts {
            match g.index.get(&id).copied() {
                Some(i) => g.slots[i as usize].account = a,
                None => g.insert(self.entries_max, id, a, false),
            }
        }
    }

    /// Forgets `accounts` (after a failed write, whose outcome on disk is
    /// not known to the cache).
    pub fn invalidate(&self, accounts: impl IntoIterator<Item = AccountId>) {
        let mut g = self.inner.lock().expect("poisoned");
        g.generation += 1;
        for id in accounts {
            if let Some(i) = g.index.remove(&id) {
                g.free.push(i);
            }
        }
    }

    /// Forgets every account (for writers of the state column other than
    /// commits, such as restoring a snapshot).
    pub fn clear(&self) {
        let mut g = self.inner.lock().expect("poisoned");
        g.generation += 1;
        g.index.clear();
        g.slots.clear();
        g.free.clear();
        g.hand = 0;
    }

    pub fn stats(&self) -> AccountCacheStats {
        let entries = self.inner.lock().expect("poisoned").index.len();
        AccountCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries,
            entries_max: self.entries_max,
        }
    }
}

impl Inner {
    /// Inserts an account not cached yet, evicting one if full.
    fn insert(&mut self, entries_max: usize, id: AccountId, account: Account, referenced: bool) {
        debug_assert!(!self.index.contains_key(&id));
        let slot = Slot {
            id,
            account,
            referenced,
        };
        let i = if let Some(i) = self.free.pop() {
            self.slots[i as usize] = slot;
            i
        } else if self.slots.len() < entries_max {
            self.slots.push(slot);
            (self.slots.len() - 1) as u32
        } else {
            let i = self.evict();
            self.slots[i] = slot;
            i as u32
        };
        self.index.insert(id, i);
        assert!(
            self.index.len() <= entries_max,
            "account cache over its bound"
        );
    }

    /// Frees the slot the CLOCK hand settles on and returns it. Only called
    /// when every slot is live (no free slot), so the hand finds one within
    /// two turns: the first clears every reference bit.
    fn evict(&mut self) -> usize {
        let n = self.slots.len();
        assert!(n > 0 && self.free.is_empty());
        loop {
            let i = self.hand;
            self.hand = (i + 1) % n;
            let s = &mut self.slots[i];
            if s.referenced {
                s.referenced = false;
            } else {
                let removed = self.index.remove(&s.id);
                debug_assert_eq!(removed, Some(i as u32));
                return i;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(i: u8) -> AccountId {
        AccountId([i; 32])
    }
    fn acct(n: u64) -> Account {
        Account {
            balance: n,
            nonce: n,
        }
    }
    fn hit(c: &AccountCache, i: u8) -> Option<Account> {
        match c.get(&id(i)) {
            Lookup::Hit(a) => Some(a),
            Lookup::Miss(_) => None,
        }
    }

    #[test]
    fn cache_stays_within_its_bound_and_keeps_referenced_accounts() {
        let c = AccountCache::new(4);
        for i in 0..4 {
            let Lookup::Miss(t) = c.get(&id(i)) else {
                panic!("empty cache hit")
            };
            c.fill(&id(i), acct(i.into()), t);
        }
        assert_eq!(c.stats().entries, 4);
        // Account 0 is read again: its bit protects it from the next
        // eviction, which takes account 1 instead.
        assert_eq!(hit(&c, 0), Some(acct(0)));
        c.apply_commit([(id(10), acct(10))]);
        assert_eq!(hit(&c, 1), None);
        assert_eq!(hit(&c, 0), Some(acct(0)));
        assert_eq!(hit(&c, 10), Some(acct(10)));
        c.apply_commit((10..30).map(|i| (id(i), acct(i.into()))));
        let s = c.stats();
        assert_eq!((s.entries, s.entries_max), (4, 4));
        assert_eq!(hit(&c, 29), Some(acct(29)));
        c.invalidate([id(29), id(99)]);
        assert_eq!(hit(&c, 29), None);
        assert_eq!(c.stats().entries, 3);
        c.apply_commit([(id(50), acct(50))]);
        assert_eq!(c.stats().entries, 4);
        c.clear();
        assert_eq!(c.stats().entries, 0);
        assert!(c.stats().hits >= 3 && c.stats().misses >= 4);
    }

    #[test]
    fn stale_fill_after_a_commit_is_dropped() {
        let c = AccountCache::new(8);
        let Lookup::Miss(t) = c.get(&id(1)) else {
            panic!("empty cache hit")
        };
        // A commit finishes while the reader is in the store.
        c.apply_commit([(id(2), acct(2))]);
        c.fill(&id(1), acct(0), t);
        assert_eq!(hit(&c, 1), None);
        // A commit's value is not overwritten by a reader's.
        let Lookup::Miss(t) = c.get(&id(3)) else {
            panic!("empty cache hit")
        };
        c.apply_commit([(id(3), acct(3))]);
        c.fill(&id(3), acct(0), t);
        assert_eq!(hit(&c, 3), Some(acct(3)));
    }
}

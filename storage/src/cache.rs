//! A bounded cache of committed accounts in front of the state column.
//!
//! Admission reads the committed nonce of every transaction's sender, and
//! settlement reads it again for every sender of a commit; without a cache
//! each read is a RocksDB point lookup. [`crate::ChainStore::account`] asks
//! this cache first, and [`crate::ChainStore::commit`] writes the new value
//! of every account a commit touched into it, right after the commit's write
//! batch returned.
//!
//! The cache is set-associative: an account's id picks one set of [`WAYS`]
//! entries, and only that set can hold it. A lookup or an update touches
//! one set (a few adjacent cache lines) instead of a hash index, a slot
//! array and an eviction queue in different places. The set is chosen by
//! the id's leading bytes, scaled: ids are public keys or recipients' hashes,
//! spread uniformly, and a commit's state diff is sorted by key, so the
//! ~2,000 accounts of a 1000-transfer block are updated sweeping the sets in
//! address order (a keyed hash scattered them, and the cache misses made the
//! update ~10% of a commit). The price: ids crafted to share leading bytes
//! crowd one set, which only costs the accounts of that set their caching
//! (misses read the store: slower, never wrong). Within a set, eviction is
//! CLOCK (second chance): a hit sets the entry's reference bit; the set's
//! hand clears set bits and evicts the first entry whose bit is clear.
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

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use velox_exec::{Account, AccountId};

/// Default of `[storage] account_cache_entries`: 65,536 accounts, about
/// 3 MiB (49 bytes each: id, balance, nonce and a share of the set's
/// bits), enough for the senders of several seconds of traffic at 10k tx/s.
pub const ACCOUNT_CACHE_ENTRIES_DEFAULT: usize = 65_536;
/// Largest accepted `account_cache_entries` (16M entries take ~800 MiB).
pub const ACCOUNT_CACHE_ENTRIES_MAX: usize = 1 << 24;
/// Entries per set: 4 keeps a set within a few cache lines while making
/// conflicts between hot accounts rare.
pub const WAYS: usize = 4;
const _: () = assert!(ACCOUNT_CACHE_ENTRIES_DEFAULT <= ACCOUNT_CACHE_ENTRIES_MAX);
const _: () = assert!(WAYS <= u8::BITS as usize);

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

#[derive(Clone, Copy, Default)]
struct Entry {
    id: AccountId,
    account: Account,
}

/// One set: up to [`WAYS`] entries. Invariant: an id appears in at most one
/// valid way of one set, the set its hash picks.
#[derive(Clone, Copy, Default)]
struct Set {
    ways: [Entry; WAYS],
    /// Bit `w`: way `w` holds an entry.
    valid: u8,
    /// Bit `w`: way `w` was hit since the hand last passed it.
    referenced: u8,
    /// The CLOCK hand: next way to consider for eviction.
    hand: u8,
}

impl Set {
    fn find(&self, ways: usize, id: &AccountId) -> Option<usize> {
        (0..ways).find(|&w| self.valid & (1 << w) != 0 && self.ways[w].id == *id)
    }

    /// Puts `e` into a free way or evicts one; returns true if the set
    /// holds one more entry than before.
    fn insert(&mut self, ways: usize, e: Entry) -> bool {
        let free = (0..ways).find(|&w| self.valid & (1 << w) == 0);
        let (w, grew) = match free {
            Some(w) => (w, true),
            None => loop {
                // Within two turns: the first clears every reference bit.
                let w = usize::from(self.hand);
                self.hand = ((w + 1) % ways) as u8;
                if self.referenced & (1 << w) != 0 {
                    self.referenced &= !(1 << w);
                } else {
                    break (w, false);
                }
            },
        };
        self.ways[w] = e;
        self.valid |= 1 << w;
        self.referenced &= !(1 << w);
        grew
    }
}

struct Inner {
    sets: Vec<Set>,
    /// Valid entries over all sets.
    entries: usize,
    /// Bumped by every commit (and invalidation); see the module docs.
    generation: u64,
}

/// See the module docs.
pub struct AccountCache {
    inner: Mutex<Inner>,
    /// Ways used per set: [`WAYS`], or fewer for a cache smaller than one set.
    ways: usize,
    entries_max: usize,
    hits: AtomicU64,
    misses: AtomicU64,
}

impl AccountCache {
    /// A cache of at most `entries_max` accounts
    /// (1..=[`ACCOUNT_CACHE_ENTRIES_MAX`]; rounded down to a multiple of
    /// [`WAYS`] above one set).
    pub fn new(entries_max: usize) -> Self {
        assert!(
            (1..=ACCOUNT_CACHE_ENTRIES_MAX).contains(&entries_max),
            "account cache entries {entries_max} outside 1..={ACCOUNT_CACHE_ENTRIES_MAX}"
        );
        let ways = entries_max.min(WAYS);
        let sets = entries_max / ways;
        Self {
            // Allocated up front: the cache's memory is what the
            // configuration asks for, not what traffic grows it to.
            inner: Mutex::new(Inner {
                sets: vec![Set::default(); sets],
                entries: 0,
                generation: 0,
            }),
            ways,
            entries_max: sets * ways,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
        }
    }

    /// The set `id` belongs in, of `n`: its leading 8 bytes scaled onto
    /// `0..n` (multiply-shift, no division), so sets follow key order.
    fn set_of(id: &AccountId, n: usize) -> usize {
        let lead = u64::from_be_bytes(id.0[..8].try_into().expect("8 bytes"));
        ((u128::from(lead) * n as u128) >> 64) as usize
    }

    pub fn get(&self, id: &AccountId) -> Lookup {
        let mut g = self.inner.lock().expect("poisoned");
        let si = Self::set_of(id, g.sets.len());
        let set = &mut g.sets[si];
        match set.find(self.ways, id) {
            Some(w) => {
                set.referenced |= 1 << w;
                let a = set.ways[w].account;
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
        if g.generation != ticket.0 {
            return;
        }
        let si = Self::set_of(id, g.sets.len());
        let set = &mut g.sets[si];
        if set.find(self.ways, id).is_none() && set.insert(self.ways, Entry { id: *id, account }) {
            g.entries += 1;
        }
    }

    /// Writes the values a durable commit gave to the accounts it touched.
    /// Call only after the commit's write returned.
    pub fn apply_commit(&self, accounts: impl IntoIterator<Item = (AccountId, Account)>) {
        let mut g = self.inner.lock().expect("poisoned");
        g.generation += 1;
        let n = g.sets.len();
        let mut grew = 0;
        for (id, account) in accounts {
            let set = &mut g.sets[Self::set_of(&id, n)];
            match set.find(self.ways, &id) {
                Some(w) => set.ways[w].account = account,
                None => grew += usize::from(set.insert(self.ways, Entry { id, account })),
            }
        }
        g.entries += grew;
        assert!(
            g.entries <= self.entries_max,
            "account cache over its bound"
        );
    }

    /// Forgets `accounts` (after a failed write, whose outcome on disk is
    /// not known to the cache).
    pub fn invalidate(&self, accounts: impl IntoIterator<Item = AccountId>) {
        let mut g = self.inner.lock().expect("poisoned");
        g.generation += 1;
        let n = g.sets.len();
        for id in accounts {
            let set = &mut g.sets[Self::set_of(&id, n)];
            if let Some(w) = set.find(self.ways, &id) {
                set.valid &= !(1 << w);
                g.entries -= 1;
            }
        }
    }

    /// Forgets every account (for writers of the state column other than
    /// commits, such as restoring a snapshot).
    pub fn clear(&self) {
        let mut g = self.inner.lock().expect("poisoned");
        g.generation += 1;
        g.sets.fill(Set::default());
        g.entries = 0;
    }

    pub fn stats(&self) -> AccountCacheStats {
        let entries = self.inner.lock().expect("poisoned").entries;
        AccountCacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            entries,
            entries_max: self.entries_max,
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

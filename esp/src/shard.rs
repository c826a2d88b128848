//! A hash map split into shards that copies of it share, so that the SA
//! table's writer, which publishes a new snapshot per change, copies one
//! shard (1/64 of the SAs) instead of the whole map: bringing up 10,000
//! facilities is then not quadratic. Readers pay one extra pointer per
//! lookup. (Written here: persistent-map crates trade away more lookup
//! speed than the data plane should give.)

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

const SHARDS: usize = 64;

/// Keys that say which shard they live in.
pub(crate) trait ShardKey: Copy + Eq + Hash {
    /// A well-mixed index below 64 (keys a peer chooses, like SPIs, must
    /// not all land in one shard).
    fn shard(&self) -> usize;
}

impl ShardKey for u32 {
    fn shard(&self) -> usize {
        (self.wrapping_mul(0x9e37_79b1) >> 26) as usize
    }
}

impl ShardKey for u128 {
    fn shard(&self) -> usize {
        let folded = (*self as u64) ^ ((*self >> 64) as u64);
        (folded.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize
    }
}

/// A map whose clones share shards until one of them changes a shard.
#[derive(Debug)]
pub(crate) struct Sharded<K, V> {
    shards: Vec<Arc<HashMap<K, V>>>,
}

impl<K, V> Clone for Sharded<K, V> {
    fn clone(&self) -> Self {
        Sharded {
            shards: self.shards.clone(),
        }
    }
}

impl<K, V> Default for Sharded<K, V> {
    fn default() -> Self {
        Sharded {
            shards: (0..SHARDS).map(|_| Arc::new(HashMap::new())).collect(),
        }
    }
}

impl<K: ShardKey, V: Clone> Sharded<K, V> {
    /// The value for `key`.
    pub(crate) fn get(&self, key: &K) -> Option<&V> {
        self.shards[key.shard()].get(key)
    }

    /// Whether `key` is present.
    pub(crate) fn contains_key(&self, key: &K) -> bool {
        self.get(key).is_some()
    }

    /// The shard of `key`, copied first if another clone shares it.
    pub(crate) fn shard_mut(&mut self, key: &K) -> &mut HashMap<K, V> {
        Arc::make_mut(&mut self.shards[key.shard()])
    }

    /// Inserts or replaces; returns the old value.
    pub(crate) fn insert(&mut self, key: K, value: V) -> Option<V> {
        self.shard_mut(&key).insert(key, value)
    }

    /// Removes `key` (copying its shard only if it is there).
    pub(crate) fn remove(&mut self, key: &K) -> Option<V> {
        if self.contains_key(key) {
            self.shard_mut(key).remove(key)
        } else {
            None
        }
    }

    /// Number of entries (a sum over the shards).
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| s.len()).sum()
    }

    /// Whether there are none.
    pub(crate) fn is_empty(&self) -> bool {
        self.shards.iter().all(|s| s.is_empty())
    }

    /// Every entry, in no particular order.
    #[cfg(test)]
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&K, &V)> {
        self.shards.iter().flat_map(|s| s.iter())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clones_share_shards_until_one_changes() {
        let mut a: Sharded<u32, u32> = Sharded::default();
        for k in 0..1000 {
            a.insert(k, k * 2);
        }
        let b = a.clone();
        a.insert(5, 0);
        assert_eq!(a.remove(&7), Some(14));
        assert_eq!(a.remove(&7), None);
        assert_eq!((a.get(&5), b.get(&5)), (Some(&0), Some(&10)));
        assert_eq!((a.get(&7), b.get(&7)), (None, Some(&14)));
        assert_eq!((a.len(), b.len()), (999, 1000));
        // Only the changed shards were copied.
        let shared = a
            .shards
            .iter()
            .zip(&b.shards)
            .filter(|(x, y)| Arc::ptr_eq(x, y))
            .count();
        assert!(shared >= SHARDS - 2, "{shared}");
    }

    #[test]
    fn keys_with_equal_low_bits_spread_over_shards() {
        let used: std::collections::HashSet<usize> =
            (0..1000u32).map(|i| (i << 8).shard()).collect();
        assert!(used.len() > SHARDS / 2, "{}", used.len());
        let used: std::collections::HashSet<usize> =
            (0..1000u128).map(|i| (i << 100).shard()).collect();
        assert!(used.len() > SHARDS / 2, "{}", used.len());
    }
}

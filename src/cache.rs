//! A bounded map for lookups that are costly to repeat (a /proc scan, a cgroup walk): it
//! keeps two generations and forgets what went unused for a whole generation.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash};

/// At most `2 * capacity` entries: new ones go into the current generation; when it is full
/// it becomes the previous one and the one before is dropped. A hit in the previous
/// generation moves the entry back into the current one, so what is still in use stays.
/// Keys are hashed by `S`: SipHash, but where the kernel makes them (inodes, cgroup ids) and
/// a cheaper hash does.
#[derive(Clone, Debug)]
pub struct BoundedCache<K, V, S = RandomState> {
    current: HashMap<K, V, S>,
    previous: HashMap<K, V, S>,
    capacity: usize,
}

impl<K: Eq + Hash, V, S: BuildHasher + Default> BoundedCache<K, V, S> {
    pub fn new(capacity: usize) -> BoundedCache<K, V, S> {
        BoundedCache { current: HashMap::default(), previous: HashMap::default(), capacity: capacity.max(1) }
    }

    /// The value of `key`, if cached; the entry counts as used.
    pub fn get(&mut self, key: &K) -> Option<&V> {
        if !self.current.contains_key(key) {
            let (key, value) = self.previous.remove_entry(key)?;
            self.insert(key, value);
        }
        // Present now: found, or just moved (a rotation keeps the newest entry).
        self.current.get(key)
    }

    pub fn insert(&mut self, key: K, value: V) {
        if self.current.len() >= self.capacity && !self.current.contains_key(&key) {
            self.previous = std::mem::take(&mut self.current);
        }
        self.current.insert(key, value);
    }

    /// Makes each generation hold at least `capacity` entries.
    pub fn hold_at_least(&mut self, capacity: usize) {
        self.capacity = self.capacity.max(capacity);
    }

    pub fn len(&self) -> usize {
        self.current.len() + self.previous.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_is_used_stays_and_the_rest_is_forgotten() {
        let mut cache: BoundedCache<_, _> = BoundedCache::new(2);
        cache.insert(1, "one");
        cache.insert(2, "two");
        // Full: 3 starts a new generation, 1 and 2 are the previous one.
        cache.insert(3, "three");
        assert_eq!(cache.get(&1), Some(&"one"));
        // 1 moved back and filled the generation: 4 starts another; 2 went unused and goes.
        cache.insert(4, "four");
        assert_eq!(cache.get(&2), None);
        assert_eq!(cache.get(&3), Some(&"three"));
        assert_eq!(cache.get(&1), Some(&"one"));
        assert!(cache.len() <= 4);
    }

    #[test]
    fn stays_bounded_across_many_keys() {
        let mut cache: BoundedCache<_, _> = BoundedCache::new(100);
        for key in 0..100_000 {
            cache.insert(key, ());
            assert!(cache.len() <= 200);
        }
    }
}

//! The assembler's flow table, bounded so that a flood cannot push out real connections:
//! connections awaiting the other side's acknowledgement wait apart, oldest pushed out
//! first, and confirmed ones are held to a share of the table per remote address and per
//! local port. Everything refused or pushed out is counted.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;

use super::assemble::Endpoints;

/// How many flows the table holds, in all and per key.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub confirmed: usize,
    /// Confirmed flows with one remote address, and with one local port.
    pub per_remote: usize,
    pub per_local_port: usize,
    /// Flows awaiting confirmation: a real handshake completes within a round trip, so a
    /// flood must bring this many forged flows per round trip to push one out.
    pub pending: usize,
}

/// Looked up for each side of every packet: foldhash costs a fraction of SipHash, and its
/// seed is random per process, so that packets cannot be forged to collide without
/// learning it.
type ByEndpoints<V> = HashMap<Endpoints, V, foldhash::fast::RandomState>;

/// Flows by their endpoints; `V` is the assembler's flow.
#[derive(Debug)]
pub struct FlowTable<V> {
    limits: Limits,
    confirmed: ByEndpoints<V>,
    per_remote: Counts<IpAddr>,
    per_local_port: Counts<u16>,
    /// Each pending flow with its arrival number.
    pending: ByEndpoints<(u64, V)>,
    /// Pending flows in arrival order; those confirmed or removed since are skipped.
    arrivals: VecDeque<(u64, Endpoints)>,
    next_arrival: u64,
    refused: u64,
}

impl<V> FlowTable<V> {
    pub fn new(limits: Limits) -> FlowTable<V> {
        FlowTable {
            limits,
            confirmed: ByEndpoints::default(),
            per_remote: Counts::default(),
            per_local_port: Counts::default(),
            pending: ByEndpoints::default(),
            arrivals: VecDeque::new(),
            next_arrival: 0,
            refused: 0,
        }
    }

    /// Flows refused or pushed out for want of room, since the start.
    pub fn refused(&self) -> u64 {
        self.refused
    }

    pub fn is_confirmed(&self, key: &Endpoints) -> bool {
        self.confirmed.contains_key(key)
    }

    pub fn get(&self, key: &Endpoints) -> Option<&V> {
        match self.confirmed.get(key) {
            Some(flow) => Some(flow),
            None => self.pending.get(key).map(|(_, flow)| flow),
        }
    }

    pub fn get_mut(&mut self, key: &Endpoints) -> Option<&mut V> {
        self.lookup(key).map(|(flow, _)| flow)
    }

    /// The flow under `key` and whether it is confirmed, if `current(flow)` holds: one hash
    /// lookup for a confirmed flow, as nearly every packet finds. Otherwise whether a flow
    /// is there.
    pub fn current(&mut self, key: &Endpoints, current: impl Fn(&V) -> bool) -> Result<(&mut V, bool), bool> {
        if let Some(flow) = self.confirmed.get_mut(key) {
            return if current(flow) { Ok((flow, true)) } else { Err(true) };
        }
        match self.pending.get_mut(key) {
            Some((_, flow)) if current(flow) => Ok((flow, false)),
            Some(_) => Err(true),
            None => Err(false),
        }
    }

    /// The flow under `key`, and whether it is confirmed.
    pub fn lookup(&mut self, key: &Endpoints) -> Option<(&mut V, bool)> {
        match self.confirmed.get_mut(key) {
            Some(flow) => Some((flow, true)),
            None => self.pending.get_mut(key).map(|(_, flow)| (flow, false)),
        }
    }

    /// Adds a flow that awaits confirmation, pushing out the oldest such flow when full.
    pub fn insert_pending(&mut self, key: Endpoints, flow: V) {
        self.remove(&key);
        while self.pending.len() >= self.limits.pending {
            let Some((arrival, oldest)) = self.arrivals.pop_front() else { break };
            if self.pending.get(&oldest).is_some_and(|(a, _)| *a == arrival) {
                self.pending.remove(&oldest);
                self.refused += 1;
            }
        }
        // Skipped arrivals accumulate while flows are confirmed: drop them now and then.
        if self.arrivals.len() > 2 * self.limits.pending {
            let pending = &self.pending;
            self.arrivals.retain(|(arrival, key)| pending.get(key).is_some_and(|(a, _)| a == arrival));
        }
        self.arrivals.push_back((self.next_arrival, key));
        self.pending.insert(key, (self.next_arrival, flow));
        self.next_arrival += 1;
    }

    /// Moves a pending flow among the confirmed ones; false (and the flow forgotten) when
    /// there is no room for it.
    pub fn confirm(&mut self, key: &Endpoints) -> bool {
        match self.pending.remove(key) {
            Some((_, flow)) => self.insert_confirmed(*key, flow),
            None => self.confirmed.contains_key(key),
        }
    }

    /// Adds a confirmed flow unless its remote address, its local port or the table is full.
    pub fn insert_confirmed(&mut self, key: Endpoints, flow: V) -> bool {
        self.remove(&key);
        if !self.has_room(&key) {
            self.refused += 1;
            return false;
        }
        self.per_remote.add(key.remote.ip());
        self.per_local_port.add(key.local.port());
        self.confirmed.insert(key, flow);
        true
    }

    /// Whether a confirmed flow with these endpoints would fit.
    pub fn has_room(&self, key: &Endpoints) -> bool {
        self.confirmed.len() < self.limits.confirmed
            && self.per_remote.get(&key.remote.ip()) < self.limits.per_remote
            && self.per_local_port.get(&key.local.port()) < self.limits.per_local_port
    }

    pub fn remove(&mut self, key: &Endpoints) -> Option<V> {
        if let Some((_, flow)) = self.pending.remove(key) {
            return Some(flow);
        }
        let flow = self.confirmed.remove(key)?;
        self.per_remote.sub(&key.remote.ip());
        self.per_local_port.sub(&key.local.port());
        Some(flow)
    }

    /// Keeps the flows for which `keep(flow, confirmed)` holds.
    pub fn retain(&mut self, mut keep: impl FnMut(&V, bool) -> bool) {
        self.pending.retain(|_, (_, flow)| keep(flow, false));
        let gone: Vec<Endpoints> =
            self.confirmed.iter().filter(|(_, flow)| !keep(flow, true)).map(|(key, _)| *key).collect();
        for key in gone {
            self.remove(&key);
        }
    }

    pub fn confirmed(&self) -> impl Iterator<Item = (&Endpoints, &V)> {
        self.confirmed.iter()
    }

    pub fn confirmed_mut(&mut self) -> impl Iterator<Item = (&Endpoints, &mut V)> {
        self.confirmed.iter_mut()
    }

    pub fn pending_keys(&self) -> impl Iterator<Item = &Endpoints> {
        self.pending.keys()
    }
}

/// How many confirmed flows share each key.
#[derive(Debug)]
struct Counts<K>(HashMap<K, usize>);

impl<K> Default for Counts<K> {
    fn default() -> Self {
        Counts(HashMap::new())
    }
}

impl<K: Hash + Eq> Counts<K> {
    fn get(&self, key: &K) -> usize {
        self.0.get(key).copied().unwrap_or(0)
    }

    fn add(&mut self, key: K) {
        *self.0.entry(key).or_insert(0) += 1;
    }

    fn sub(&mut self, key: &K) {
        if let Some(n) = self.0.get_mut(key) {
            *n -= 1;
            if *n == 0 {
                self.0.remove(key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collector::Proto;

    fn ends(local: &str, remote: &str) -> Endpoints {
        Endpoints { proto: Proto::Tcp, local: local.parse().unwrap(), remote: remote.parse().unwrap() }
    }

    const LIMITS: Limits = Limits { confirmed: 6, per_remote: 2, per_local_port: 3, pending: 3 };

    #[test]
    fn a_pending_flood_pushes_out_the_oldest_only() {
        let mut table = FlowTable::new(LIMITS);
        let real = ends("10.0.0.1:1000", "10.0.0.2:80");
        table.insert_pending(real, "real");
        for port in 1..=2 {
            table.insert_pending(ends(&format!("10.0.0.1:{port}"), "6.6.6.6:1"), "forged");
        }
        assert!(table.confirm(&real));
        for port in 3..=10 {
            table.insert_pending(ends(&format!("10.0.0.1:{port}"), "6.6.6.6:1"), "forged");
        }
        assert_eq!(table.refused(), 7);
        assert_eq!(table.get_mut(&real), Some(&mut "real"));
        assert_eq!(table.pending_keys().count(), 3);
    }

    #[test]
    fn confirmed_flows_are_bounded_per_remote_and_per_local_port() {
        let mut table = FlowTable::new(LIMITS);
        assert!(table.insert_confirmed(ends("10.0.0.1:1", "7.7.7.7:1"), ()));
        assert!(table.insert_confirmed(ends("10.0.0.1:2", "7.7.7.7:1"), ()));
        assert!(!table.insert_confirmed(ends("10.0.0.1:3", "7.7.7.7:1"), ()), "a third from one remote");
        for remote in ["1.1.1.1:1", "2.2.2.2:1", "3.3.3.3:1"] {
            table.insert_confirmed(ends("10.0.0.1:443", remote), ());
        }
        table.insert_pending(ends("10.0.0.1:443", "4.4.4.4:1"), ());
        assert!(!table.confirm(&ends("10.0.0.1:443", "4.4.4.4:1")), "a fourth to one port");
        assert_eq!(table.refused(), 2);
        table.remove(&ends("10.0.0.1:1", "7.7.7.7:1"));
        assert!(table.insert_confirmed(ends("10.0.0.1:3", "7.7.7.7:1"), ()), "room again");
        assert!(table.insert_confirmed(ends("10.0.0.1:5", "5.5.5.5:1"), ()));
        assert!(!table.insert_confirmed(ends("10.0.0.1:6", "5.5.5.5:1"), ()), "the table is full");
    }
}

//! Host names for the live screen's addresses: reverse lookups on a thread of their own, so
//! that a slow or silent DNS server never holds up a frame; answers come back to the event
//! loop as events (`Event::Resolved`), and are cached, bounded in number and in rate.

mod services;
mod system;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::thread;
use std::time::Duration;

use anyhow::{Context, Result};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::cache::BoundedCache;
pub use services::Services;
pub use system::SystemLookup;

/// Addresses waiting for the resolver thread: beyond this, asking again waits for a frame.
const QUEUE: usize = 64;
/// Names (and known absences of one) kept per cache generation.
const CACHED: usize = 4096;
/// Least time between two lookups, which bounds the queries tcptop sends.
const LOOKUP_GAP: Duration = Duration::from_millis(20);

/// A reverse lookup; it may block (it runs on the resolver thread).
pub trait Lookup: Send + 'static {
    /// The name of `ip`, if it has one.
    fn reverse(&mut self, ip: IpAddr) -> Option<String>;
}

/// The resolver thread's answer about one address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Resolved {
    pub ip: IpAddr,
    pub name: Option<String>,
}

/// The screen's side of the resolver: the names known so far, and requests for the others
/// that never wait.
pub struct Names {
    requests: SyncSender<IpAddr>,
    /// `None`: looked up, no name.
    known: BoundedCache<IpAddr, Option<String>>,
    /// Asked and not answered yet: at most `QUEUE` and the one being looked up.
    pending: HashSet<IpAddr>,
}

impl Names {
    /// Starts a resolver thread on `lookup`; its answers come out of the receiver, for
    /// `answered`. The thread ends once `Names` is dropped and its lookup returns.
    pub fn start(lookup: impl Lookup) -> Result<(Names, UnboundedReceiver<Resolved>)> {
        let (requests, queue) = sync_channel(QUEUE);
        let (answers, answered) = unbounded_channel();
        thread::Builder::new()
            .name("resolver".into())
            .spawn(move || resolve(lookup, queue, answers))
            .context("starting the resolver thread")?;
        let names = Names { requests, known: BoundedCache::new(CACHED), pending: HashSet::new() };
        Ok((names, answered))
    }

    /// The name of `ip` if known; if it was never looked up, asks for it without waiting.
    pub fn name(&mut self, ip: IpAddr) -> Option<&str> {
        if self.known.get(&ip).is_none() && !self.pending.contains(&ip) {
            match self.requests.try_send(ip) {
                Ok(()) => {
                    self.pending.insert(ip);
                }
                // Asked again in a later frame, once the thread caught up.
                Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {}
            }
        }
        self.known.get(&ip)?.as_deref()
    }

    /// Takes in an answer of the resolver thread.
    pub fn answered(&mut self, answer: Resolved) {
        self.pending.remove(&answer.ip);
        self.known.insert(answer.ip, answer.name);
    }

    /// The names of `ips` that are known, asking for the others.
    pub fn of(&mut self, ips: impl IntoIterator<Item = IpAddr>) -> HashMap<IpAddr, String> {
        ips.into_iter().filter_map(|ip| Some((ip, self.name(ip)?.to_string()))).collect()
    }

    /// Addresses asked for and not answered yet.
    pub fn pending(&self) -> usize {
        self.pending.len()
    }
}

/// The resolver thread: one lookup at a time, at most one per `LOOKUP_GAP`.
fn resolve(
    mut lookup: impl Lookup,
    queue: std::sync::mpsc::Receiver<IpAddr>,
    answers: UnboundedSender<Resolved>,
) {
    while let Ok(ip) = queue.recv() {
        let name = lookup.reverse(ip);
        if answers.send(Resolved { ip, name }).is_err() {
            return;
        }
        thread::sleep(LOOKUP_GAP);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::mpsc;
    use std::time::Instant;

    use super::*;

    /// Answers from a table, at once.
    pub struct Table(pub Vec<(&'static str, &'static str)>);

    impl Lookup for Table {
        fn reverse(&mut self, ip: IpAddr) -> Option<String> {
            self.0.iter().find(|(addr, _)| addr.parse() == Ok(ip)).map(|(_, name)| name.to_string())
        }
    }

    /// Never answers: each lookup waits on a channel no one sends on (a DNS server that
    /// drops every query).
    pub struct Silent(pub mpsc::Receiver<()>);

    impl Lookup for Silent {
        fn reverse(&mut self, _: IpAddr) -> Option<String> {
            let _ = self.0.recv();
            None
        }
    }

    fn ip(text: &str) -> IpAddr {
        text.parse().unwrap()
    }

    #[test]
    fn names_are_asked_once_answered_by_the_thread_and_cached() {
        let (mut names, mut answers) = Names::start(Table(vec![("192.0.2.1", "www.example")])).unwrap();
        assert_eq!(names.name(ip("192.0.2.1")), None);
        assert_eq!(names.name(ip("192.0.2.2")), None);
        // Both asked once however often a frame asks.
        assert_eq!(names.pending(), 2);
        for _ in 0..2 {
            names.answered(answers.blocking_recv().unwrap());
        }
        assert_eq!(names.name(ip("192.0.2.1")), Some("www.example"));
        assert_eq!(names.name(ip("192.0.2.2")), None);
        assert_eq!(names.pending(), 0);
        let known = names.of([ip("192.0.2.1"), ip("192.0.2.2")]);
        assert_eq!(known, HashMap::from([(ip("192.0.2.1"), "www.example".to_string())]));
    }

    #[test]
    fn a_resolver_that_never_answers_bounds_what_waits_and_never_blocks() {
        let (_never, silence) = mpsc::channel();
        let (mut names, _answers) = Names::start(Silent(silence)).unwrap();
        let start = Instant::now();
        for n in 0..10_000u32 {
            assert_eq!(names.name(IpAddr::from(n.to_be_bytes())), None);
        }
        assert!(start.elapsed() < Duration::from_secs(1), "{:?}", start.elapsed());
        // The queue and the one lookup under way.
        assert!(names.pending() <= QUEUE + 1, "{}", names.pending());
    }
}

//! Many connections (root, host only): more new ones than the kernel side has slots for at
//! start still all arrive, each with its exact bytes; thousands of short ones leave no row
//! behind.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use tcptop::collector::{Collector, Filters};
use tcptop::model::{Model, Retention};

use crate::helpers::{as_traffic, open_collector, Watch};

/// Raises the open-file limit to `wanted` (root may raise the hard limit too).
fn allow_open_files(wanted: u64) {
    let limit = libc::rlimit { rlim_cur: wanted, rlim_max: wanted };
    // SAFETY: setrlimit only reads the struct passed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0, "setrlimit");
}

/// A stream's local and remote addresses, as a row names them.
fn ends(stream: &TcpStream) -> (std::net::SocketAddr, std::net::SocketAddr) {
    (stream.local_addr().unwrap(), stream.peer_addr().unwrap())
}

/// `count` loopback connections, each with its own byte count (1 to 50 bytes from client to
/// server), the collector's events waited for after every `wait_every` of them: the
/// collection thread waits at most 100 ms at a time, and each wait hands the kernel side new
/// connection slots.
fn connections(watch: &mut Watch, count: usize, wait_every: usize) -> Vec<(TcpStream, TcpStream)> {
    allow_open_files(2 * count as u64 + 256);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let mut pairs = Vec::new();
    while pairs.len() < count {
        let first = pairs.len();
        pairs.extend(as_traffic(|| {
            (first..count.min(first + wait_every))
                .map(|i| {
                    let mut client = TcpStream::connect(server).unwrap();
                    let (mut accepted, _) = listener.accept().unwrap();
                    client.write_all(&vec![7; 1 + i % 50]).unwrap();
                    accepted.read_exact(&mut vec![0; 1 + i % 50]).unwrap();
                    (client, accepted)
                })
                .collect::<Vec<_>>()
        }));
        watch.collector.wait_events(Duration::ZERO).expect("waiting for events");
    }
    pairs
}

#[test]
fn connections_beyond_the_slots_in_hand_at_start_all_arrive() {
    let Some(mut watch) = open_collector(Filters::default()) else {
        return;
    };
    // Both ends of each connection take a slot: a few hundred more than the kernel had.
    let conns = watch.collector.slots_in_hand() as usize / 2 + 200;
    let pairs = connections(&mut watch, conns, 500);
    watch.poll();
    let rows: HashMap<_, _> =
        watch.latest.values().map(|c| ((c.local, c.remote), (c.tx_bytes, c.rx_bytes))).collect();
    for (i, (client, accepted)) in pairs.iter().enumerate() {
        let bytes = 1 + i as u64 % 50;
        assert_eq!(rows.get(&ends(client)), Some(&(bytes, 0)), "client end of connection {i}");
        assert_eq!(rows.get(&ends(accepted)), Some(&(0, bytes)), "server end of connection {i}");
    }
}

/// Connections open before start are adopted by two threads at once where there are two CPUs,
/// each taking every other slot: every end is claimed and listed once.
#[test]
fn connections_open_before_start_are_each_adopted_once() {
    const PAIRS: usize = 1_500;
    allow_open_files(2 * PAIRS as u64 + 256);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let pairs: Vec<(TcpStream, TcpStream)> = (0..PAIRS)
        .map(|_| (TcpStream::connect(listener.local_addr().unwrap()).unwrap(), listener.accept().unwrap().0))
        .collect();
    let port = listener.local_addr().unwrap().port();
    let Some(mut watch) = open_collector(Filters { port: Some(port), ..Filters::default() }) else {
        return;
    };
    assert_eq!(watch.collector.adopted() as usize, 2 * PAIRS, "both ends of every connection");
    watch.poll();
    let mut listed: HashMap<_, usize> = HashMap::new();
    for conn in watch.latest.values() {
        *listed.entry((conn.local, conn.remote)).or_default() += 1;
    }
    for (client, accepted) in &pairs {
        assert_eq!(listed.get(&ends(client)), Some(&1), "client end {:?}", ends(client));
        assert_eq!(listed.get(&ends(accepted)), Some(&1), "server end {:?}", ends(accepted));
    }
}

/// 5,000 short connections in one interval make more lifecycle events than the ring buffer
/// holds: the table is the truth, so no row outlives its connection, the lost events are
/// counted, and the model shrinks back once the closed rows' retention is over.
#[test]
fn short_connections_in_one_interval_leave_no_rows_behind() {
    const CONNS: usize = 5_000;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let Some(mut watch) = open_collector(Filters { port: Some(server.port()), ..Filters::default() }) else {
        return;
    };
    let retention = Retention::default();
    let mut model = Model::new(Duration::ZERO, retention);
    let mut now = Duration::ZERO;
    let mut update = |watch: &mut crate::helpers::Watch, model: &mut Model| {
        now += Duration::from_secs(1);
        model.update(watch.collector.collect().expect("collecting"), now);
    };
    update(&mut watch, &mut model);
    as_traffic(|| {
        for _ in 0..CONNS {
            let mut client = TcpStream::connect(server).unwrap();
            let (mut accepted, _) = listener.accept().unwrap();
            client.write_all(b"x").unwrap();
            accepted.read_exact(&mut [0]).unwrap();
        }
    });
    // The sockets are destroyed once both ends are closed: give the kernel a moment.
    std::thread::sleep(Duration::from_millis(500));
    update(&mut watch, &mut model);
    let open: Vec<_> = model.rows().filter(|row| !row.is_closed()).map(|row| row.conn.clone()).collect();
    assert!(open.is_empty(), "{} rows outlive their connections, e.g. {:?}", open.len(), open.first());
    let lost = model.overflow().lost_events;
    eprintln!("{} rows in the interval of the connections; {lost} events lost", model.len());
    assert!(model.len() <= 2 * CONNS, "{} rows for {CONNS} connections", model.len());
    for _ in 0..=retention.closed_intervals {
        update(&mut watch, &mut model);
    }
    assert_eq!(model.len(), 0, "closed rows stay after their retention");
}

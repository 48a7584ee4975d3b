//! Many connections at once (root, host only): more rows than the memory-mapped table holds
//! still all arrive, each with its exact bytes.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};

use tcptop::collector::Filters;

use crate::helpers::{as_traffic, open_collector};

/// Raises the open-file limit to `wanted` (root may raise the hard limit too).
fn allow_open_files(wanted: u64) {
    let limit = libc::rlimit { rlim_cur: wanted, rlim_max: wanted };
    // SAFETY: setrlimit only reads the struct passed.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) }, 0, "setrlimit");
}

#[test]
fn rows_beyond_the_table_arrive_through_the_iterator() {
    let Some(mut watch) = open_collector(Filters::default()) else {
        return;
    };
    // Both ends of each connection are rows: a few hundred more than the table holds.
    let conns = watch.collector.table_rows() / 2 + 200;
    allow_open_files(2 * conns as u64 + 256);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = listener.local_addr().unwrap();
    let pairs: Vec<(TcpStream, TcpStream)> = as_traffic(|| {
        (0..conns)
            .map(|i| {
                let mut client = TcpStream::connect(server).unwrap();
                let (mut accepted, _) = listener.accept().unwrap();
                // Every connection its own byte count, so that rows cannot be confused.
                client.write_all(&vec![7; 1 + i % 50]).unwrap();
                accepted.read_exact(&mut vec![0; 1 + i % 50]).unwrap();
                (client, accepted)
            })
            .collect()
    });
    watch.poll();
    let rows: HashMap<_, _> =
        watch.latest.values().map(|c| ((c.local, c.remote), (c.tx_bytes, c.rx_bytes))).collect();
    for (i, (client, accepted)) in pairs.iter().enumerate() {
        let bytes = 1 + i as u64 % 50;
        let ends = |s: &TcpStream| (s.local_addr().unwrap(), s.peer_addr().unwrap());
        assert_eq!(rows.get(&ends(client)), Some(&(bytes, 0)), "client end of connection {i}");
        assert_eq!(rows.get(&ends(accepted)), Some(&(0, bytes)), "server end of connection {i}");
    }
}

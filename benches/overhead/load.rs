//! The load generator: TCP traffic on loopback whose send and receive calls are counted
//! exactly, so that throughput and cost per call can be computed.

use std::env;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// Size of each request and each response of the request/response workload.
pub const MESSAGE: usize = 64;
/// Size of each write and read of the bulk workload.
const CHUNK: usize = 128 * 1024;
/// Sockets one process holds: under the usual hard limit on open files (which only
/// CAP_SYS_RESOURCE may raise) and, at two sockets per connection to one listening port,
/// well inside the ephemeral port range.
pub const SOCKETS_PER_PROCESS: usize = 16_000;

/// One thread's running counts, published after every call. Alone on its cache line so that
/// threads do not slow each other down.
#[derive(Default)]
#[repr(align(128))]
struct Counter {
    /// send and receive system calls (each one an event for tcptop's hooks)
    calls: AtomicU64,
    /// round trips completed, or bytes received
    units: AtomicU64,
}

impl Counter {
    fn add(&self, calls: u64, units: u64) {
        // Only this thread writes: a plain store is enough and cheaper than an atomic add.
        self.calls.store(self.calls.load(Ordering::Relaxed) + calls, Ordering::Relaxed);
        self.units.store(self.units.load(Ordering::Relaxed) + units, Ordering::Relaxed);
    }
}

/// Totals of a workload at one moment.
#[derive(Clone, Copy, Debug, Default)]
pub struct Totals {
    pub calls: u64,
    pub units: u64,
}

impl std::ops::Sub for Totals {
    type Output = Totals;
    fn sub(self, earlier: Totals) -> Totals {
        Totals { calls: self.calls - earlier.calls, units: self.units - earlier.units }
    }
}

/// Traffic running on its own threads until `stop`.
pub struct Workload {
    stop: Arc<AtomicBool>,
    counters: Vec<Arc<Counter>>,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl Workload {
    /// `conns` connections, each a client sending a `MESSAGE`-byte request and waiting for
    /// the server's `MESSAGE`-byte answer, over and over. Units are round trips.
    pub fn request_response(conns: usize) -> io::Result<Workload> {
        Workload::start(
            conns,
            |mut client, counter, stop| {
                let mut message = [0u8; MESSAGE];
                while !stop.load(Ordering::Relaxed) {
                    client.write_all(&message)?;
                    let reads = read_message(&mut client, &mut message)?;
                    counter.add(1 + reads, 1);
                }
                Ok(())
            },
            |mut server, counter| {
                let mut message = [0u8; MESSAGE];
                // The client closing its end (a read of 0 bytes) ends the loop.
                while let reads @ 1.. = read_message(&mut server, &mut message)? {
                    server.write_all(&message)?;
                    counter.add(reads + 1, 0);
                }
                Ok(())
            },
        )
    }

    /// `conns` connections, each streaming `CHUNK`-byte writes to a reader. Units are bytes read.
    pub fn bulk(conns: usize) -> io::Result<Workload> {
        Workload::start(
            conns,
            |mut client, counter, stop| {
                let chunk = vec![0u8; CHUNK];
                while !stop.load(Ordering::Relaxed) {
                    client.write_all(&chunk)?;
                    counter.add(1, 0);
                }
                Ok(())
            },
            |mut server, counter| {
                let mut chunk = vec![0u8; CHUNK];
                loop {
                    match server.read(&mut chunk)? {
                        0 => return Ok(()),
                        n => counter.add(1, n as u64),
                    }
                }
            },
        )
    }

    /// `conns` threads ending connections with resets, over and over, for the health hooks:
    /// each round a connect to a closed port (refused: a reset sent by the kernel and received
    /// by the client), then a connection closed with a zero linger (a reset sent on an
    /// established socket and received by its peer). Units are rounds; calls are connects.
    pub fn resets(conns: usize) -> io::Result<Workload> {
        let listener = Arc::new(TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?);
        // Closed again at once: nothing listens there.
        let closed = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let mut workload = Workload { stop: Arc::clone(&stop), counters: Vec::new(), threads: Vec::new() };
        for _ in 0..conns {
            let counter = Arc::<Counter>::default();
            workload.counters.push(Arc::clone(&counter));
            let (listener, stop) = (Arc::clone(&listener), Arc::clone(&stop));
            workload.threads.push(thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match TcpStream::connect(closed) {
                        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                        Err(e) => return Err(e),
                        Ok(_) => return Err(io::Error::other(format!("something listens on {closed}"))),
                    }
                    // Every thread connects before it accepts, so an accept never waits for long
                    // (the connection it takes may be another thread's).
                    let client = TcpStream::connect(listener.local_addr()?)?;
                    let (server, _) = listener.accept()?;
                    reset_on_close(&client)?;
                    drop(client);
                    drop(server);
                    counter.add(2, 1);
                }
                Ok(())
            }));
        }
        Ok(workload)
    }

    /// Connects `conns` pairs on loopback and runs `client` and `server` on a thread each.
    /// The client sees `stop`; the server runs until the client closes its end.
    fn start(
        conns: usize,
        client: fn(TcpStream, &Counter, &AtomicBool) -> io::Result<()>,
        server: fn(TcpStream, &Counter) -> io::Result<()>,
    ) -> io::Result<Workload> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut workload = Workload { stop: Arc::clone(&stop), counters: Vec::new(), threads: Vec::new() };
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?;
        for _ in 0..conns {
            let (client_end, server_end) = connect(&listener)?;
            let (client_counter, server_counter) = (Arc::<Counter>::default(), Arc::<Counter>::default());
            workload.counters.extend([Arc::clone(&client_counter), Arc::clone(&server_counter)]);
            let stop = Arc::clone(&stop);
            workload.threads.push(thread::spawn(move || client(client_end, &client_counter, &stop)));
            workload.threads.push(thread::spawn(move || server(server_end, &server_counter)));
        }
        Ok(workload)
    }

    pub fn totals(&self) -> Totals {
        self.counters.iter().fold(Totals::default(), |sum, c| Totals {
            calls: sum.calls + c.calls.load(Ordering::Relaxed),
            units: sum.units + c.units.load(Ordering::Relaxed),
        })
    }

    /// Stops the traffic and waits for every thread; a thread's I/O error is returned.
    pub fn stop(self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads {
            thread.join().expect("load threads do not panic")?;
        }
        Ok(())
    }
}

/// Reads one whole message, or nothing at the end of the stream. Returns the number of
/// read calls it took (0 at the end), which is what tcptop's receive hook sees.
fn read_message(stream: &mut TcpStream, message: &mut [u8]) -> io::Result<u64> {
    let (mut got, mut calls) = (0, 0);
    while got < message.len() {
        calls += 1;
        match stream.read(&mut message[got..])? {
            0 if got == 0 => return Ok(0),
            0 => return Err(io::ErrorKind::UnexpectedEof.into()),
            n => got += n,
        }
    }
    Ok(calls)
}

/// A zero linger: closing the socket sends a reset instead of a FIN.
fn reset_on_close(stream: &TcpStream) -> io::Result<()> {
    let linger = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: setsockopt reads `linger`, of the size passed, on a descriptor `stream` owns.
    let done = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    if done != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// A connected pair on loopback: (client end, server end).
fn connect(listener: &TcpListener) -> io::Result<(TcpStream, TcpStream)> {
    let client = TcpStream::connect(listener.local_addr()?)?;
    let (server, _) = listener.accept()?;
    client.set_nodelay(true)?;
    server.set_nodelay(true)?;
    Ok((client, server))
}

/// Many quiet connections held open, `active` of them (rotating) sending one `MESSAGE` each
/// way once a second, so that a known number of sockets shows up in every interval.
pub struct Held {
    stop: Arc<AtomicBool>,
    traffic: JoinHandle<io::Result<()>>,
}

impl Held {
    /// Opens `sockets` sockets on `address`: both ends of `sockets / 2` loopback connections.
    /// tcptop lists each end as a connection of its own, as it would on two hosts. Each second
    /// the next `active_pairs` connections (all of them, at most) exchange a message.
    fn open(sockets: usize, address: Ipv4Addr, active_pairs: usize) -> io::Result<Held> {
        raise_fd_limit(sockets as u64 + 64)?;
        let listener = TcpListener::bind((address, 0))?;
        let mut pairs = (0..sockets / 2).map(|_| connect(&listener)).collect::<io::Result<Vec<_>>>()?;
        let active_pairs = active_pairs.min(pairs.len());
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        let traffic = thread::spawn(move || {
            let mut message = [0u8; MESSAGE];
            let (mut next, mut first) = (Instant::now(), 0);
            while !stopped.load(Ordering::Relaxed) {
                if Instant::now() >= next {
                    for i in first..first + active_pairs {
                        let len = pairs.len();
                        let (client, server) = &mut pairs[i % len];
                        client.write_all(&message)?;
                        read_message(server, &mut message)?;
                    }
                    first = (first + active_pairs) % pairs.len().max(1);
                    next += Duration::from_secs(1);
                }
                thread::sleep(Duration::from_millis(20));
            }
            Ok(())
        });
        Ok(Held { stop, traffic })
    }

    /// Stops the traffic and closes every connection.
    fn close(self) -> io::Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        self.traffic.join().expect("the traffic thread does not panic")
    }
}

/// Sockets held by helper processes (this benchmark run again with `--hold`), so that none
/// needs more open files than its limit allows. Each holder listens on an address of its own
/// (127.0.N.1), so that no destination needs more ephemeral ports than there are.
pub struct Holders(Vec<Child>);

impl Holders {
    /// Returns once all `sockets` are open and their traffic runs: `active` sockets each
    /// second, or all of them with `None`.
    pub fn open(sockets: usize, active: Option<usize>) -> io::Result<Holders> {
        let mut holders = Holders(Vec::new());
        // Started all at once and awaited after, so that they connect in parallel.
        for (index, first) in (0..sockets).step_by(SOCKETS_PER_PROCESS).enumerate() {
            let count = SOCKETS_PER_PROCESS.min(sockets - first);
            let address = u8::try_from(index + 1)
                .map(|n| Ipv4Addr::new(127, 0, n, 1))
                .map_err(|_| io::Error::other(format!("{sockets} sockets need more than 254 holders")))?;
            // This holder's share of the active sockets, in whole connections (two sockets each).
            let active_pairs = active.map_or(count, |active| (active * count).div_ceil(sockets)).div_ceil(2);
            let child = Command::new(env::current_exe()?)
                .args(["--hold", &count.to_string()])
                .args(["--hold-address", &address.to_string()])
                .args(["--hold-active-pairs", &active_pairs.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()?;
            holders.0.push(child);
        }
        for child in &mut holders.0 {
            let mut ready = String::new();
            BufReader::new(child.stdout.take().expect("stdout is piped")).read_line(&mut ready)?;
            if ready.trim() != HOLDING {
                return Err(io::Error::other(format!("a socket holder failed ({})", child.wait()?)));
            }
        }
        Ok(holders)
    }

    /// Closes every socket and waits for the holders to exit.
    pub fn close(mut self) -> io::Result<()> {
        for child in &mut self.0 {
            drop(child.stdin.take());
        }
        for child in &mut self.0 {
            child.wait()?;
        }
        Ok(())
    }
}

/// What a holder prints once its sockets are open.
const HOLDING: &str = "holding";

/// A holder's work (`--hold`): opens `sockets` sockets on `address`, says so on stdout, and
/// keeps `active_pairs` connections a second busy until stdin closes.
pub fn hold(sockets: usize, address: Ipv4Addr, active_pairs: usize) -> io::Result<()> {
    let held = Held::open(sockets, address, active_pairs)?;
    println!("{HOLDING}");
    io::copy(&mut io::stdin(), &mut io::sink())?;
    held.close()
}

/// Two descriptors per connection: the default limit (often 1024) is far too low.
fn raise_fd_limit(wanted: u64) -> io::Result<()> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(io::Error::last_os_error());
    }
    if limit.rlim_cur >= wanted {
        return Ok(());
    }
    // Root may raise the hard limit too, up to fs.nr_open.
    limit = libc::rlimit { rlim_cur: wanted, rlim_max: limit.rlim_max.max(wanted) };
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) } != 0 {
        return Err(io::Error::other(format!(
            "cannot raise the open file limit to {wanted}: {}",
            io::Error::last_os_error()
        )));
    }
    Ok(())
}

//! How long the live screen takes to build and draw one frame of 10,000 connections: filter,
//! sort, the visible rows, the detail pane, on a 200x60 TestBackend. Prints the median.
//! Run: cargo bench --bench render

use std::time::{Duration, Instant};

use ratatui::backend::TestBackend;
use tcptop::model::{Conn, Proto, Sample, TcpState};
use tcptop::model::{Model, Retention};
use tcptop::view::tui::screen::Header;
use tcptop::view::tui::state::TuiState;
use tcptop::view::tui::Tui;

const CONNECTIONS: u64 = 10_000;
const RUNS: usize = 101;

fn sample(round: u64) -> Sample {
    let conns = (0..CONNECTIONS)
        .map(|id| Conn {
            id,
            pid: Some(1000 + (id % 300) as u32),
            comm: format!("worker-{}", id % 300),
            proto: Proto::Tcp,
            local: format!("10.0.{}.{}:{}", id / 250 % 250, id % 250, 20_000 + id % 40_000).parse().unwrap(),
            remote: format!("192.0.2.{}:443", id % 200).parse().unwrap(),
            state: Some(TcpState::Established),
            rx_bytes: round * (id * 37 % 100_000),
            tx_bytes: round * (id * 11 % 50_000),
            netns: None,
            cgroup: None,
            health: None,
        })
        .collect();
    Sample { conns, ..Sample::default() }
}

fn main() {
    let mut model = Model::new(Duration::ZERO, Retention::default());
    for round in 1..=3 {
        model.update(sample(round), Duration::from_secs(round));
    }
    let header = Header {
        host: "bench".into(),
        backend: "fentry".into(),
        interval: Duration::from_secs(1),
        filters: Vec::new(),
    };
    let mut tui = Tui::new(TestBackend::new(200, 60), header, TuiState::default()).unwrap();
    tui.interval(&model);
    let mut times: Vec<Duration> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            tui.draw(&model).unwrap();
            start.elapsed()
        })
        .collect();
    times.sort();
    println!(
        "build and draw one frame of {CONNECTIONS} connections (200x60): median {:.2} ms, min {:.2} ms, max {:.2} ms over {RUNS} runs",
        times[RUNS / 2].as_secs_f64() * 1e3,
        times[0].as_secs_f64() * 1e3,
        times[RUNS - 1].as_secs_f64() * 1e3,
    );
}

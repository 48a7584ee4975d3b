//! The overhead and scale benchmark: what running tcptop costs the traffic it watches and
//! the machine it runs on, printed as Markdown tables. Figures only: nothing here asserts on
//! time. Needs root (BPF) and the release binary:
//!
//!     cargo build --release && cargo bench --bench overhead -- [--quick] [--huge]
//!
//! Every configuration runs once per round, rounds interleaved (A B C, A B C, ...) so that
//! drift in the machine's speed falls on all of them alike; medians over the rounds.

#[cfg(target_os = "linux")]
mod child;
#[cfg(target_os = "linux")]
mod floor;
#[cfg(target_os = "linux")]
mod load;
#[cfg(target_os = "linux")]
mod measure;
#[cfg(target_os = "linux")]
mod peers;
#[cfg(target_os = "linux")]
mod run;
#[cfg(target_os = "linux")]
mod scrape;

#[cfg(target_os = "linux")]
fn main() {
    use clap::Parser;
    if let Err(e) = run::run(run::Args::parse()) {
        eprintln!("overhead: {e:#}");
        std::process::exit(1);
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("overhead: the benchmark measures the eBPF collector and runs on Linux only");
}

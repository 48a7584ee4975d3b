//! The tcptop binary: everything it does is in the library, from `tcptop::app::main`.

fn main() {
    std::process::exit(tcptop::app::main());
}

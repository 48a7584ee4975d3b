//! The tcptop binary: everything it does is in the library, from `tcptop::app::main`.

#[global_allocator]
static ALLOCATOR: tcptop::platform::Allocator = tcptop::platform::Allocator;

fn main() {
    std::process::exit(tcptop::app::main());
}

fn main() {
    std::process::exit(tcptop::app::main());
}

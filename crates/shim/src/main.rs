//! `berth-shim`: see the library documentation.

fn main() {
    // A re-executed child becomes a container process here and never returns.
    berth_runtime::entrypoint();
    std::process::exit(berth_shim::main_entry());
}

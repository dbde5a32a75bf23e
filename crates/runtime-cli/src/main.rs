//! `berth-runtime`: a thin command line over the `berth-runtime` library.

mod cli;
mod commands;
mod log;
mod template;

fn main() {
    // A re-executed child becomes the container's init here and never returns.
    berth_runtime::entrypoint();
    std::process::exit(commands::main(std::env::args_os()));
}

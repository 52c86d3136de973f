//! The `swapcfg` binary: all logic lives in the library; this only hands over
//! the process arguments and turns the outcome into an exit status.
fn main() -> std::process::ExitCode {
    swapcfg::cli::main()
}

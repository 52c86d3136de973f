//! `cargo xtask`: developer tasks that are not part of the shipped binary
//! (dist, e2e, bench).
fn main() {
    let task = std::env::args().nth(1).unwrap_or_default();
    eprintln!("xtask: unknown task {task:?}; known: dist, bench");
    std::process::exit(2);
}

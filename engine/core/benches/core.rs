//! Benchmarks of the core (filled in later).
fn main() {}

//! Placeholder until the backup benchmark lands.
fn main() {}

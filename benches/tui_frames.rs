//! Console frame times (filled in with the console).
fn main() {}

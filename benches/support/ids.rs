//! Message ids for the benchmarks: nearly sequential, or spread over the key space as real
//! clients' and providers' random ids are (`BENCH_IDS=random`). Spread ids cost the store
//! much more: each one lands on an index page of its own (BENCHMARKS.md).

/// Whether `BENCH_IDS=random` asks for spread ids.
pub fn random_ids() -> bool {
    std::env::var("BENCH_IDS").is_ok_and(|v| v == "random")
}

/// The id of message `i`: `m17`, or a fixed mix of `i` (so runs repeat) when `random`.
pub fn id(prefix: &str, i: u64, random: bool) -> String {
    if random {
        let mixed = (i ^ 0x5bd1_e995).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        format!("{prefix}{:016x}", mixed.rotate_left(29))
    } else {
        format!("{prefix}{i}")
    }
}

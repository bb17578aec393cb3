//! Proof by interleavings of the ownership model (`docs/ownership.md`), on the in-memory
//! store and on the file store: the harness and its invariants are
//! `fargate_testkit::interleavings` (the DynamoDB store runs it in `fargate-aws`'s tests).
//!
//! `FARGATE_INTERLEAVING_SEEDS=<n>` sets how many seeds run; `FARGATE_INTERLEAVING_SEED=<n>`
//! runs seed `n` alone and prints its whole step log.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use fargate_testkit::interleavings::{
    DEFAULT_SEEDS, FileBackend, MemoryBackend, check_rogues_are_caught, check_seeds, run_seed,
    scenario, seeds_to_run,
};

#[test]
fn interleavings_keep_the_ownership_invariants() {
    check_seeds(seeds_to_run(DEFAULT_SEEDS), |_| MemoryBackend::fresh());
}

#[test]
fn interleavings_keep_the_ownership_invariants_on_the_file_store() {
    // Real files: slower than memory, and a seed's run depends on when the I/O finishes.
    check_seeds(seeds_to_run(DEFAULT_SEEDS / 40), |_| FileBackend::fresh());
}

#[test]
fn a_seed_replays_exactly() {
    for seed in 0..40 {
        let first = run_seed(seed, MemoryBackend::fresh(), scenario);
        let again = run_seed(seed, MemoryBackend::fresh(), scenario);
        assert!(first.events.len() > 20, "seed {seed}: {:?}", first.events);
        assert_eq!(first.description, again.description, "seed {seed}");
        assert_eq!(first.result, again.result, "seed {seed}");
        assert_eq!(
            first.events, again.events,
            "seed {seed}: the step logs differ"
        );
    }
    let a = run_seed(3, MemoryBackend::fresh(), scenario);
    let b = run_seed(4, MemoryBackend::fresh(), scenario);
    assert_ne!(a.events, b.events, "two seeds, one interleaving");
}

#[test]
fn the_checker_catches_a_rogue_actor() {
    check_rogues_are_caught(|_| MemoryBackend::fresh());
    check_rogues_are_caught(|_| FileBackend::fresh());
}

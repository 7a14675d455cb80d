//! What checking a request's token and role costs: the SHA-256 of the token, a map lookup
//! among the server's tokens, and the role's permission. Run with
//! `cargo bench -p wayline --bench access`; prints a Markdown section for BENCHMARKS.md.

mod common;

use std::sync::Arc;
use std::time::Instant;

use wayline::auth::{NewToken, Permission, Principal, Tokens};
use wayline::store::{SledStore, Store};

const TOKENS: usize = 1_000;
const CHECKS: usize = 200_000;
const ROUNDS: usize = 11;

fn main() {
    let machine = common::machine();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "## Role checks ({})\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d")
    );
    println!(
        "Machine: {machine}, {cores} cores. Command: `cargo bench -p wayline --bench access`.\n"
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let store: Arc<dyn Store> =
        Arc::new(SledStore::open(&dir.path().join("store")).expect("store opens"));
    let tokens = Tokens::load(store).expect("tokens load");
    let admin = Principal::start_up();
    let mut secrets = Vec::new();
    for n in 0..TOKENS {
        let request = NewToken {
            name: format!("token {n}"),
            role: ["manager", "operator", "analyst", "ingest"][n % 4].into(),
            grants: Vec::new(),
            expires_at: None,
            expires_in_days: None,
        };
        secrets.push(tokens.create(request, &admin, 0).expect("token made").0);
    }
    let mut rounds = Vec::new();
    let mut allowed = 0usize;
    for _ in 0..ROUNDS {
        let started = Instant::now();
        for n in 0..CHECKS {
            let principal = tokens
                .authenticate(&secrets[n % TOKENS], 1)
                .expect("token works");
            allowed += usize::from(principal.may(Permission::ReadReports));
        }
        rounds.push(started.elapsed().as_nanos() as f64 / CHECKS as f64);
    }
    rounds.sort_by(f64::total_cmp);
    println!("| {TOKENS} tokens held, {CHECKS} checks a round, {ROUNDS} rounds | ns per request |");
    println!("|---|---|");
    println!(
        "| authenticate (SHA-256 + lookup) and permission, median | **{:.0}** |",
        rounds[ROUNDS / 2]
    );
    println!(
        "| fastest / slowest round | {:.0} / {:.0} |",
        rounds[0],
        rounds[ROUNDS - 1]
    );
    // Keep the checks from being optimised away.
    assert!(allowed > 0);
}

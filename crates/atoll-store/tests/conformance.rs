//! The store conformance suite against the embedded backend, each check on a
//! fresh file, and the whole suite again and again on one file.

use std::path::Path;
use std::sync::Arc;

use atoll_store::conformance::{self, Failure};
use atoll_store::embedded::EmbeddedStore;
use atoll_store::SharedStore;

fn open(path: &Path) -> SharedStore {
    match EmbeddedStore::open(path) {
        Ok(store) => Arc::new(store),
        Err(e) => panic!("cannot open {}: {e}", path.display()),
    }
}

fn passed(result: Result<(), Failure>) {
    if let Err(failure) = result {
        panic!("{failure}");
    }
}

macro_rules! checks {
    ($($check:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $check() {
                let dir = tempfile::tempdir().expect("temporary directory");
                passed(conformance::$check(open(&dir.path().join("atoll.db"))).await);
            }
        )*
    };
}

checks!(
    claim_won_then_taken,
    claim_keeps_fields,
    concurrent_claims_one_winner,
    release_only_by_holder,
    claims_of_holder,
    list_claims_by_node,
    apply_stale_generation_conflicts,
    apply_all_or_nothing,
    concurrent_applies_all_or_nothing,
    objects_put_get_list,
    revisions_change_on_write,
    put_refuses_resources,
);

/// The suite writes under unique names, so it passes on a store that holds
/// its own earlier runs, and on the same file opened again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_repeatedly_on_one_file() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("atoll.db");

    let store = open(&path);
    passed(conformance::run_all(store.clone()).await);
    passed(conformance::run_all(store.clone()).await);
    drop(store);

    passed(conformance::run_all(open(&path)).await);
}

/// Two stores on one file, as two processes would have: the checks pass
/// with reads through one and writes through the other mixed by the suite's
/// own concurrency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_all_on_two_stores_of_one_file_at_once() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let path = dir.path().join("atoll.db");
    let (one, two) = (open(&path), open(&path));

    let (first, second) = tokio::join!(
        conformance::concurrent_claims_one_winner(one.clone()),
        conformance::concurrent_claims_one_winner(two.clone()),
    );
    passed(first);
    passed(second);
    passed(conformance::run_all(two).await);
    passed(conformance::run_all(one).await);
}

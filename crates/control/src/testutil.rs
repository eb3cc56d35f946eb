//! Test helpers shared by this crate's unit tests (model fixtures come from
//! `klb-test-support`).

use klb_store::Store;

/// A store on a fresh SQLite file in `dir`.
pub async fn store(dir: &tempfile::TempDir) -> Store {
    Store::open(&format!("sqlite://{}", dir.path().join("k.db").display()))
        .await
        .unwrap()
}

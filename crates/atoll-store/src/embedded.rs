//! The embedded backend: one SQLite file. (Being written.)

use crate::StoreError;

/// The embedded store.
#[derive(Debug)]
pub struct EmbeddedStore;

impl EmbeddedStore {
    /// Opens or creates the file.
    pub fn open(path: &str) -> Result<EmbeddedStore, StoreError> {
        Err(StoreError::Backend { store: format!("embedded:{path}"), reason: "not written yet".into() })
    }
}

//! `atoll get` and `atoll describe`. (Being written.)

use atoll_store::SharedStore;

use crate::cli::{GetWhat, ObjectKind, Output};

/// `atoll get`.
///
/// # Errors
/// The store's.
pub async fn get(_store: &SharedStore, _what: GetWhat, _output: Output) -> anyhow::Result<String> {
    anyhow::bail!("get is not written yet")
}

/// `atoll describe`.
///
/// # Errors
/// The store's, or an unknown name.
pub async fn describe(_store: &SharedStore, _kind: ObjectKind, _name: &str) -> anyhow::Result<String> {
    anyhow::bail!("describe is not written yet")
}

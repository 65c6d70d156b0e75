//! Opening a store from `--store`.

use std::sync::Arc;

use anyhow::Context;
use atoll_store::SharedStore;

use crate::cli::StoreArgs;

/// Opens the store an address names: `embedded:<path>` or `etcd:<endpoints>`.
///
/// # Errors
/// An unknown scheme, or the backend's open error.
pub async fn open(args: &StoreArgs) -> anyhow::Result<SharedStore> {
    let address = args.store.trim();
    if address.starts_with("embedded:") {
        return atoll_store::open_embedded(address)
            .await
            .with_context(|| format!("opening {address}"));
    }
    if address.starts_with("etcd:") {
        anyhow::ensure!(
            args.etcd_timeout.is_finite() && args.etcd_timeout > 0.0,
            "--etcd-timeout {}: must be a positive number of seconds",
            args.etcd_timeout
        );
        let opts = atoll_etcd::EtcdOptions {
            prefix: args.etcd_prefix.clone(),
            ca_file: args.etcd_ca.clone(),
            cert_file: args.etcd_cert.clone(),
            key_file: args.etcd_key.clone(),
            username: args.etcd_user.clone(),
            password: args.etcd_password.clone(),
            request_timeout: std::time::Duration::from_secs_f64(args.etcd_timeout),
            ..atoll_etcd::EtcdOptions::default()
        };
        let store = atoll_etcd::open(address, opts)
            .await
            .with_context(|| format!("opening {address}"))?;
        return Ok(Arc::new(store));
    }
    if address == "kubernetes" {
        // TODO: the Kubernetes backend (CRDs through the API server) is not written yet.
        anyhow::bail!(
            "--store kubernetes is not available yet; use embedded:<path> or etcd:<endpoints>"
        );
    }
    anyhow::bail!(
        "--store {address:?}: expected embedded:<path> or etcd:<endpoint>[,<endpoint>...]"
    )
}

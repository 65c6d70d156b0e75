//! A feed of claim changes, from a watch on the claims prefix.
//!
//! Agents use it to learn what other agents claim and release, so that they
//! rarely race for an address another agent holds, and see released
//! addresses without re-listing. The feed is a hint for caches: the claim
//! transaction in the store stays the only authority on who holds what.
//!
//! Each (re)established watch starts with [`ClaimEvent::Resync`], since
//! events between two watches are not replayed: the receiver re-lists.

use std::sync::Arc;
use std::time::Duration;

use atoll_store::{Claim, ClaimEvent};
use etcd_client::{EventType, WatchOptions};
use tokio::sync::broadcast;
use tracing::{debug, info};

use crate::cluster::{confirmed_watch, describe_error, Cluster};

/// The pause before watching again after a failure.
const PAUSE: Duration = Duration::from_millis(500);

/// Feeds `events` from a watch on `prefix` until the task is aborted.
pub(crate) async fn follow(
    cluster: Arc<Cluster>,
    prefix: String,
    events: broadcast::Sender<ClaimEvent>,
) {
    loop {
        if let Err(reason) = follow_once(&cluster, &prefix, &events).await {
            debug!(store = %cluster.describe(), reason = %reason, "claims watch down");
        }
        tokio::time::sleep(PAUSE).await;
    }
}

fn decode(value: &[u8]) -> Option<Claim> {
    serde_json::from_slice(value).ok()
}

async fn follow_once(
    cluster: &Cluster,
    prefix: &str,
    events: &broadcast::Sender<ClaimEvent>,
) -> Result<(), String> {
    let options = WatchOptions::new().with_prefix().with_prev_key();
    let mut stream = confirmed_watch(cluster, "watch claims", prefix, options).await?;

    info!(store = %cluster.describe(), "watching claims");
    // Nobody listening is fine: agents subscribe when they start.
    let _ = events.send(ClaimEvent::Resync);

    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => return Err("watch closed".into()),
            Err(e) => return Err(describe_error(&e)),
        };
        if response.canceled() {
            return Err(format!("watch cancelled: {}", response.cancel_reason()));
        }
        for event in response.events() {
            let change = match event.event_type() {
                EventType::Put => event
                    .kv()
                    .and_then(|kv| decode(kv.value()))
                    .map(ClaimEvent::Held),
                EventType::Delete => event
                    .prev_kv()
                    .and_then(|kv| decode(kv.value()))
                    .map(ClaimEvent::Released),
            };
            match change {
                Some(change) => {
                    let _ = events.send(change);
                }
                // A record that does not decode: let the cache re-list.
                None => {
                    let _ = events.send(ClaimEvent::Resync);
                }
            }
        }
    }
}

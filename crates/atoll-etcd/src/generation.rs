//! The resource generation, kept current by a watch.
//!
//! Agents ask for the generation on every request, so it is served from
//! memory while a watch on the generation key is established. A background
//! task reads the key (at revision `R`), watches it from `R + 1` and applies
//! every event; the cache is marked live only once the watch is created, so
//! read and watch together miss nothing. When the watch ends (member
//! stopped, connection lost, member cut off from its quorum: requests carry
//! "require leader", which makes etcd cancel the watches of a member that
//! lost its leader, revision compacted) the cache is marked stale, callers
//! fall back to a linearizable read, and the task reads and watches again
//! after a pause.
//!
//! Values are kept with the revision that wrote them and never replaced by
//! an older one, so a store's own [`apply`](atoll_store::Store::apply),
//! which records the generation it wrote, is seen by its next
//! [`generation`](atoll_store::Store::generation) even before the watch
//! delivers it.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use atoll_store::StoreError;
use etcd_client::{EventType, GetOptions, WatchOptions};
use tracing::{debug, info};

use crate::cluster::{confirmed_watch, describe_error, Cluster};

/// The first pause before watching again; doubled up to [`MAX_PAUSE`].
const FIRST_PAUSE: Duration = Duration::from_millis(100);

/// The longest pause before watching again.
const MAX_PAUSE: Duration = Duration::from_secs(2);

#[derive(Debug, Default)]
struct State {
    /// True while a watch feeds `value`.
    live: bool,
    value: u64,
    revision: i64,
}

/// The last known generation, and whether a watch keeps it current.
#[derive(Debug, Default)]
pub(crate) struct GenerationCache {
    state: Mutex<State>,
}

impl GenerationCache {
    /// The generation, if a watch keeps it current.
    pub fn current(&self) -> Option<u64> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state.live.then_some(state.value)
    }

    /// Records the generation written at `revision`, unless a later one is
    /// known.
    pub fn observe(&self, value: u64, revision: i64) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if revision >= state.revision {
            state.value = value;
            state.revision = revision;
        }
    }

    fn set_live(&self, live: bool) {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .live = live;
    }
}

/// Parses the value of the generation key.
///
/// # Errors
/// [`StoreError::Corrupt`] when it is not a decimal number.
pub(crate) fn parse(key: &str, value: &[u8]) -> Result<u64, StoreError> {
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse().ok())
        .ok_or_else(|| StoreError::Corrupt {
            key: key.to_string(),
            reason: format!(
                "the generation is not a number: {:?}",
                String::from_utf8_lossy(value)
            ),
        })
}

/// Keeps `cache` current until the task is aborted.
pub(crate) async fn follow(cluster: Arc<Cluster>, key: String, cache: Arc<GenerationCache>) {
    let mut pause = FIRST_PAUSE;
    loop {
        let outcome = follow_once(&cluster, &key, &cache).await;
        cache.set_live(false);
        match outcome {
            Ok(Watched::Long) => pause = FIRST_PAUSE,
            Ok(Watched::Short) => {}
            Err(reason) => {
                debug!(store = %cluster.describe(), reason = %reason, "generation watch down");
            }
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(MAX_PAUSE);
    }
}

/// How long a watch lasted, to reset the pause after a good one.
enum Watched {
    Long,
    Short,
}

/// One read-then-watch, until the watch ends.
async fn follow_once(
    cluster: &Cluster,
    key: &str,
    cache: &GenerationCache,
) -> Result<Watched, String> {
    // Read the key, then watch from just after the revision read.
    let response = cluster
        .run("read generation", |mut client| async move {
            client.get(key, Some(GetOptions::new())).await
        })
        .await
        .map_err(|e| e.to_string())?;
    let read_at = response.header().map(|h| h.revision()).unwrap_or_default();
    let (value, revision) = match response.kvs().first() {
        Some(kv) => (
            parse(key, kv.value()).map_err(|e| e.to_string())?,
            kv.mod_revision(),
        ),
        None => (0, 0),
    };

    let options = WatchOptions::new().with_start_revision(read_at + 1);
    let mut stream = confirmed_watch(cluster, "watch generation", key, options).await?;

    cache.observe(value, revision);
    cache.set_live(true);
    info!(
        store = %cluster.describe(),
        generation = value,
        revision = read_at,
        "watching the generation"
    );
    let started = tokio::time::Instant::now();
    let lasted = |started: tokio::time::Instant| {
        if started.elapsed() > MAX_PAUSE {
            Watched::Long
        } else {
            Watched::Short
        }
    };

    loop {
        let response = match stream.message().await {
            Ok(Some(response)) => response,
            Ok(None) => {
                info!(store = %cluster.describe(), "generation watch closed; watching again");
                return Ok(lasted(started));
            }
            Err(e) => {
                info!(
                    store = %cluster.describe(),
                    error = %describe_error(&e),
                    "generation watch failed; watching again"
                );
                return Ok(lasted(started));
            }
        };
        if response.canceled() {
            info!(
                store = %cluster.describe(),
                reason = response.cancel_reason(),
                compacted_at = response.compact_revision(),
                "generation watch cancelled; watching again"
            );
            return Ok(lasted(started));
        }
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let value = match event.event_type() {
                EventType::Put => parse(key, kv.value()).map_err(|e| e.to_string())?,
                EventType::Delete => 0,
            };
            debug!(
                generation = value,
                revision = kv.mod_revision(),
                "generation changed"
            );
            cache.observe(value, kv.mod_revision());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_serves_only_while_live_and_never_goes_back() {
        let cache = GenerationCache::default();
        cache.observe(3, 30);
        assert_eq!(cache.current(), None, "not live yet");

        cache.set_live(true);
        assert_eq!(cache.current(), Some(3));
        cache.observe(2, 20);
        assert_eq!(
            cache.current(),
            Some(3),
            "an older revision does not replace a newer one"
        );
        cache.observe(4, 40);
        assert_eq!(cache.current(), Some(4));

        cache.set_live(false);
        assert_eq!(cache.current(), None);
    }

    #[test]
    fn parses_the_generation() {
        assert_eq!(parse("k", b"42").unwrap(), 42);
        let err = parse("/atoll/generation", b"x1").unwrap_err().to_string();
        assert!(
            err.contains("/atoll/generation") && err.contains("not a number"),
            "{err}"
        );
    }
}

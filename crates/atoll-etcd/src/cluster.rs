//! The endpoints of the cluster, and failover between them.
//!
//! `etcd-client` balances over its endpoints but does not route around a
//! dead one: requests wait for it. So the store keeps one client per
//! endpoint, each on its own lazily connected channel (which reconnects by
//! itself on the next request after a failure), and [`Cluster::run`] tries
//! them in turn:
//!
//! - it starts with the endpoint that answered last, and moves on when one
//!   fails to connect, answers with a retryable error (no leader, timed
//!   out, unavailable) or gives no answer within its share of the time;
//! - every request carries etcd's "require leader" flag, so that a member
//!   cut off from its quorum answers "no leader" at once instead of hanging;
//! - the whole operation is bounded by the request timeout; when it passes
//!   the operation fails with [`StoreError::Unavailable`] naming every
//!   endpoint and the last error of each.
//!
//! A retried write may already have been applied by an attempt whose answer
//! was lost; the callers make their writes recognisable (see the claim and
//! apply IDs in the crate documentation).

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use atoll_store::StoreError;
use etcd_client::{Certificate, Client, ConnectOptions, Identity, TlsOptions};
use tokio::sync::OnceCell;
use tokio::time::{timeout, Instant};
use tonic::Code;
use tracing::{debug, info};

use crate::options::{read_pem, EtcdOptions};

/// The shortest time one attempt is given, so that a short remaining budget
/// still lets a healthy endpoint answer.
const MIN_ATTEMPT: Duration = Duration::from_millis(50);

/// The pause before going round the endpoints again, doubled each round.
const FIRST_BACKOFF: Duration = Duration::from_millis(25);

/// The longest pause between rounds.
const MAX_BACKOFF: Duration = Duration::from_millis(250);

/// One endpoint and its client, made on first use.
struct Member {
    url: String,
    channel: etcd_client::Channel,
    client: OnceCell<Client>,
    /// False from a failed attempt to the next answer, to log each change
    /// once rather than each attempt.
    answering: AtomicBool,
}

/// The endpoints of one cluster.
pub(crate) struct Cluster {
    describe: String,
    members: Vec<Member>,
    connect: ConnectOptions,
    preferred: AtomicUsize,
    request_timeout: Duration,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("describe", &self.describe)
            .finish_non_exhaustive()
    }
}

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// The endpoint or the cluster is unwell: try another endpoint.
    Retry,
    /// The request itself is refused; another endpoint would refuse it too.
    Fatal,
}

impl Cluster {
    /// Prepares one channel per endpoint. Connects to none of them.
    ///
    /// # Errors
    /// [`StoreError::BadAddress`] when a TLS file cannot be read or used.
    pub fn new(
        address: &str,
        endpoints: &[String],
        opts: &EtcdOptions,
    ) -> Result<Cluster, StoreError> {
        let bad = |reason: String| StoreError::BadAddress {
            given: address.to_string(),
            reason,
        };

        let mut tls = None;
        if let Some(ca) = &opts.ca_file {
            let mut config = TlsOptions::new()
                .ca_certificate(Certificate::from_pem(read_pem(address, "ca_file", ca)?));
            if let (Some(cert), Some(key)) = (&opts.cert_file, &opts.key_file) {
                let cert = read_pem(address, "cert_file", cert)?;
                let key = read_pem(address, "key_file", key)?;
                config = config.identity(Identity::from_pem(cert, key));
            }
            tls = Some(config);
        }

        let mut members = Vec::new();
        for url in endpoints {
            let mut endpoint = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|e| bad(format!("endpoint {url}: {e}")))?
                .connect_timeout(opts.dial_timeout)
                .tcp_nodelay(true)
                .http2_keep_alive_interval(Duration::from_secs(5))
                .keep_alive_timeout(opts.request_timeout)
                .keep_alive_while_idle(true);
            if let Some(config) = &tls {
                endpoint = endpoint
                    .tls_config(config.clone())
                    .map_err(|e| bad(format!("endpoint {url}: TLS: {}", chain(&e))))?;
            }
            members.push(Member {
                url: url.clone(),
                channel: etcd_client::Channel::Tonic(endpoint.connect_lazy()),
                client: OnceCell::new(),
                answering: AtomicBool::new(true),
            });
        }

        let mut connect = ConnectOptions::new().with_require_leader(true);
        if let (Some(user), Some(password)) = (&opts.username, &opts.password) {
            connect = connect
                .with_user(user, password)
                .with_auto_token_refresh(true);
        }

        Ok(Cluster {
            describe: format!("etcd:{}", endpoints.join(",")),
            members,
            connect,
            preferred: AtomicUsize::new(0),
            request_timeout: opts.request_timeout,
        })
    }

    /// `etcd:<endpoint>,<endpoint>...`, for messages.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    /// Runs `op` against one endpoint after another until one answers, within
    /// the request timeout. `what` names the operation in errors and logs.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when no endpoint answered in time, naming
    /// each endpoint and its last error; [`StoreError::Backend`] when the
    /// cluster refused the request (bad credentials, permission denied, a
    /// request over the cluster's limits).
    pub async fn run<T, F, Fut>(&self, what: &str, mut op: F) -> Result<T, StoreError>
    where
        F: FnMut(Client) -> Fut,
        Fut: Future<Output = Result<T, etcd_client::Error>>,
    {
        let deadline = Instant::now() + self.request_timeout;
        let count = self.members.len();
        let mut last_error: Vec<Option<String>> = vec![None; count];
        let mut backoff = FIRST_BACKOFF;

        loop {
            let first = self.preferred.load(Ordering::Relaxed) % count;
            for step in 0..count {
                let index = (first + step) % count;
                let member = &self.members[index];
                let now = Instant::now();
                if now >= deadline {
                    return Err(self.unavailable(what, &last_error));
                }

                // Each endpoint left in this round gets an equal share of the
                // time left, so that one hanging member cannot use it all.
                let remaining = deadline - now;
                let share = (remaining / (count - step) as u32)
                    .max(MIN_ATTEMPT)
                    .min(remaining);
                let attempt = async {
                    let client = member
                        .client
                        .get_or_try_init(|| {
                            Client::from_channel(member.channel.clone(), Some(self.connect.clone()))
                        })
                        .await?
                        .clone();
                    op(client).await
                };
                let error = match timeout(share, attempt).await {
                    Ok(Ok(value)) => {
                        self.answered(index);
                        return Ok(value);
                    }
                    Ok(Err(e)) => {
                        let message = describe_error(&e);
                        if verdict(&e) == Verdict::Fatal {
                            return Err(StoreError::Backend {
                                store: self.describe.clone(),
                                reason: format!("{what}: {}: {message}", member.url),
                            });
                        }
                        message
                    }
                    Err(_) => format!("no answer within {} ms", share.as_millis()),
                };
                debug!(
                    endpoint = %member.url,
                    operation = what,
                    error = %error,
                    "etcd attempt failed"
                );
                self.failed(index, &error);
                last_error[index] = Some(error);
            }

            // Every endpoint failed this round: pause a little (the cluster
            // may be electing a leader), then go round again.
            let now = Instant::now();
            if now >= deadline {
                return Err(self.unavailable(what, &last_error));
            }
            tokio::time::sleep(backoff.min(deadline - now)).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
        }
    }

    /// Remembers the endpoint that answered, to start there next time.
    fn answered(&self, index: usize) {
        self.preferred.store(index, Ordering::Relaxed);
        let member = &self.members[index];
        if !member.answering.swap(true, Ordering::Relaxed) {
            info!(store = %self.describe, endpoint = %member.url, "etcd endpoint answers again");
        }
    }

    /// Moves the starting point past an endpoint that failed, unless another
    /// operation already moved it.
    fn failed(&self, index: usize, error: &str) {
        let next = (index + 1) % self.members.len();
        let _ = self
            .preferred
            .compare_exchange(index, next, Ordering::Relaxed, Ordering::Relaxed);
        let member = &self.members[index];
        if member.answering.swap(false, Ordering::Relaxed) {
            info!(
                store = %self.describe,
                endpoint = %member.url,
                error,
                "etcd endpoint failed; trying the others"
            );
        }
    }

    fn unavailable(&self, what: &str, last_error: &[Option<String>]) -> StoreError {
        let each: Vec<String> = self
            .members
            .iter()
            .zip(last_error)
            .map(|(m, e)| format!("{}: {}", m.url, e.as_deref().unwrap_or("not tried")))
            .collect();
        StoreError::Unavailable {
            store: self.describe.clone(),
            reason: format!(
                "{what}: no endpoint answered within {} ms ({})",
                self.request_timeout.as_millis(),
                each.join("; ")
            ),
        }
    }
}

/// Sorts a failure into retry-elsewhere or give-up.
fn verdict(error: &etcd_client::Error) -> Verdict {
    use etcd_client::Error as E;
    match error {
        E::TransportError(_) | E::IoError(_) | E::WatchError(_) => Verdict::Retry,
        E::GRpcStatus(status) => match status.code() {
            // etcd answers "no leader", "leader changed", "request timed
            // out" and "server stopped" with Unavailable; a broken
            // connection surfaces as Unavailable, Unknown, Cancelled or
            // Internal depending on where it broke.
            Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
            | Code::Aborted
            | Code::ResourceExhausted => Verdict::Retry,
            _ => Verdict::Fatal,
        },
        _ => Verdict::Fatal,
    }
}

/// The message of an error with its causes, for one line of a report.
pub(crate) fn describe_error(error: &etcd_client::Error) -> String {
    match error {
        etcd_client::Error::GRpcStatus(status) => {
            let text = format!("{:?}: {}", status.code(), status.message());
            with_causes(text, std::error::Error::source(status))
        }
        other => chain(other),
    }
}

/// An error and its sources, joined with `: `.
fn chain(error: &dyn std::error::Error) -> String {
    with_causes(error.to_string(), error.source())
}

/// Appends each cause that the text does not already say.
fn with_causes(mut text: String, mut source: Option<&(dyn std::error::Error + 'static)>) -> String {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// True when an error says the requested revision was compacted away.
pub(crate) fn is_compacted(error: &etcd_client::Error) -> bool {
    matches!(error, etcd_client::Error::GRpcStatus(s)
        if s.code() == Code::OutOfRange && s.message().contains("compacted"))
}

/// Opens a watch and waits for etcd to confirm it before trusting it.
///
/// # Errors
/// The failure, as text for the watcher's log: no endpoint answered, or etcd
/// refused or closed the watch.
pub(crate) async fn confirmed_watch(
    cluster: &Cluster,
    what: &'static str,
    key: &str,
    options: etcd_client::WatchOptions,
) -> Result<etcd_client::WatchStream, String> {
    cluster
        .run(what, |mut client| {
            let options = options.clone();
            async move {
                let mut stream = client.watch(key, Some(options)).await?;
                match stream.message().await? {
                    Some(created) if created.created() && !created.canceled() => Ok(stream),
                    Some(other) => Err(etcd_client::Error::WatchError(format!(
                        "watch not created: {}",
                        other.cancel_reason()
                    ))),
                    None => Err(etcd_client::Error::WatchError("watch closed".into())),
                }
            }
        })
        .await
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sorts_errors() {
        use etcd_client::Error as E;
        let cases = [
            (
                "no leader",
                E::GRpcStatus(tonic::Status::unavailable("etcdserver: no leader")),
                Verdict::Retry,
            ),
            (
                "timeout",
                E::GRpcStatus(tonic::Status::deadline_exceeded("x")),
                Verdict::Retry,
            ),
            (
                "broken",
                E::GRpcStatus(tonic::Status::unknown("transport error")),
                Verdict::Retry,
            ),
            (
                "io",
                E::IoError(std::io::Error::other("reset")),
                Verdict::Retry,
            ),
            (
                "auth",
                E::GRpcStatus(tonic::Status::invalid_argument("authentication failed")),
                Verdict::Fatal,
            ),
            (
                "denied",
                E::GRpcStatus(tonic::Status::permission_denied("x")),
                Verdict::Fatal,
            ),
            (
                "too many ops",
                E::GRpcStatus(tonic::Status::invalid_argument("too many operations")),
                Verdict::Fatal,
            ),
            ("args", E::InvalidArgs("x".into()), Verdict::Fatal),
        ];
        for (name, error, want) in cases {
            assert_eq!(verdict(&error), want, "{name}");
        }
    }

    #[test]
    fn recognises_compaction() {
        let compacted = etcd_client::Error::GRpcStatus(tonic::Status::out_of_range(
            "etcdserver: mvcc: required revision has been compacted",
        ));
        assert!(is_compacted(&compacted));
        assert!(!is_compacted(&etcd_client::Error::InvalidArgs("x".into())));
    }
}

//! The agent's unix socket: one JSON request line per connection, one JSON
//! answer line (`atoll_cni::wire`), each connection in its own task.
//!
//! The socket is created with mode 0600: only root (the runtime) may ask for
//! addresses. On SIGTERM or SIGINT the listener closes, requests in flight
//! finish, and the socket file is removed.

use std::net::IpAddr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use atoll_cni::wire::{
    AgentOk, AgentRequest, AgentResponse, Command, WireDns, WireIp, WireRoute, MAX_MESSAGE_BYTES,
};
use atoll_store::Attachment;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinSet;
use tracing::{debug, info, warn, Instrument};

use crate::service::{AddRequest, AddResult, AgentError, Service};

/// Failures to start serving.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The socket could not be created.
    #[error("cannot listen on {path}: {source}")]
    Listen {
        /// Socket path.
        path: PathBuf,
        /// Cause.
        #[source]
        source: std::io::Error,
    },
    /// Another agent answers on the socket.
    #[error("another agent is already serving {path}")]
    InUse {
        /// Socket path.
        path: PathBuf,
    },
}

/// Binds the socket with mode 0600, replacing a stale socket file.
///
/// # Errors
/// [`ServeError`].
pub async fn bind(path: &Path) -> Result<UnixListener, ServeError> {
    let listen_err = |source| ServeError::Listen {
        path: path.to_path_buf(),
        source,
    };
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ServeError::InUse {
                path: path.to_path_buf(),
            });
        }
        std::fs::remove_file(path).map_err(listen_err)?;
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(listen_err)?;
    }
    // Create the socket with no permissions for group and others from the start.
    // SAFETY: umask only changes the process's file creation mask.
    let old = unsafe { libc::umask(0o177) };
    let bound = UnixListener::bind(path);
    // SAFETY: as above; restores the previous mask.
    unsafe { libc::umask(old) };
    let listener = bound.map_err(listen_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(listen_err)?;
    Ok(listener)
}

/// Serves until `shutdown` resolves, then waits for requests in flight and
/// removes the socket file.
pub async fn serve(
    service: Arc<Service>,
    listener: UnixListener,
    path: PathBuf,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let mut tasks = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let service = service.clone();
                    tasks.spawn(async move { handle(service, stream).await });
                }
                Err(e) => warn!(error = %e, "accept failed"),
            },
            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
        }
    }
    drop(listener);
    let in_flight = tasks.len();
    while tasks.join_next().await.is_some() {}
    let _ = std::fs::remove_file(&path);
    info!(in_flight, socket = %path.display(), "agent stopped");
}

async fn handle(service: Arc<Service>, stream: UnixStream) {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read).take(MAX_MESSAGE_BYTES as u64);
    let mut line = Vec::new();
    let response = match reader.read_until(b'\n', &mut line).await {
        Ok(0) => return,
        Ok(_) => match AgentRequest::from_line(&line) {
            Ok(req) => {
                let span = tracing::info_span!("request", command = ?req.command, container = %req.container_id, ifname = %req.ifname);
                dispatch(&service, req).instrument(span).await
            }
            Err(e) => AgentResponse::error(
                atoll_cni::codes::DECODE_FAILURE,
                "malformed request",
                e.to_string(),
            ),
        },
        Err(e) => {
            debug!(error = %e, "reading a request failed");
            return;
        }
    };
    match response.to_line() {
        Ok(bytes) => {
            if let Err(e) = write.write_all(&bytes).await {
                debug!(error = %e, "the plugin went away before the answer");
            }
        }
        Err(e) => warn!(error = %e, "encoding an answer failed"),
    }
}

fn error_response(e: &AgentError) -> AgentResponse {
    AgentResponse::error(e.code(), e.to_string(), String::new())
}

async fn dispatch(service: &Service, req: AgentRequest) -> AgentResponse {
    let attachment = Attachment {
        container_id: req.container_id.clone(),
        ifname: req.ifname.clone(),
    };
    let outcome = match req.command {
        Command::Add => {
            let add = AddRequest {
                attachment,
                network: req.network.clone(),
                cni_pools: req.pools.clone(),
                args: req.args.clone(),
            };
            service
                .add(&add)
                .await
                .map(|r| AgentResponse::Ok(to_wire(&r)))
        }
        Command::Del => service
            .del(&attachment)
            .await
            .map(|()| AgentResponse::empty()),
        Command::Check => {
            let mut expected = Vec::new();
            for cidr in &req.expected_ips {
                let ip = cidr.split('/').next().unwrap_or_default();
                match ip.parse::<IpAddr>() {
                    Ok(ip) => expected.push(ip),
                    Err(_) => {
                        return AgentResponse::error(
                            atoll_cni::codes::DECODE_FAILURE,
                            format!("prevResult address {cidr:?} is not an address"),
                            String::new(),
                        )
                    }
                }
            }
            service
                .check(&attachment, &expected)
                .await
                .map(|()| AgentResponse::empty())
        }
        Command::Gc => {
            let valid: Vec<Attachment> = req
                .valid_attachments
                .iter()
                .map(|a| Attachment {
                    container_id: a.container_id.clone(),
                    ifname: a.ifname.clone(),
                })
                .collect();
            service
                .gc(&req.network, &valid)
                .await
                .map(|_| AgentResponse::empty())
        }
        Command::Status => service.status().await.map(|()| AgentResponse::empty()),
    };
    match outcome {
        Ok(r) => r,
        Err(e) => {
            warn!(code = e.code(), error = %e, "request failed");
            error_response(&e)
        }
    }
}

fn to_wire(r: &AddResult) -> AgentOk {
    AgentOk {
        ips: r
            .ips
            .iter()
            .map(|i| WireIp {
                address: format!("{}/{}", i.address, i.prefix_len),
                gateway: i.gateway.map(|g| g.to_string()),
                pool: i.pool.clone(),
                subnet: i.subnet.clone(),
            })
            .collect(),
        routes: r
            .routes
            .iter()
            .map(|rt| WireRoute {
                dst: rt.dst.clone(),
                gw: rt.gw.map(|g| g.to_string()),
            })
            .collect(),
        dns: r
            .dns
            .as_ref()
            .map(|d| WireDns {
                nameservers: d.nameservers.clone(),
                domain: d.domain.clone(),
                search: d.search.clone(),
                options: d.options.clone(),
            })
            .unwrap_or_default(),
    }
}

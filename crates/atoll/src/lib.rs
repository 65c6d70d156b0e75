//! `atoll`: the node agent, the admin CLI and the quick start, each a thin
//! layer over the engine (`atoll-core`), the stores and the agent library.
//!
//! - [`cli`]: the command line.
//! - [`stores`]: `--store` to a store.
//! - [`apply`]: validation and writing of manifests.
//! - [`inspect`]: `get` and `describe`.
//! - [`admin`]: `delete`, `release`, `check`, `gc`.
//! - [`demo`]: the quick start.

pub mod admin;
pub mod apply;
pub mod cli;
pub mod demo;
pub mod inspect;
pub mod stores;

use std::sync::Arc;

use anyhow::Context;
use atoll_core::resource::StringMap;

use crate::cli::{AgentArgs, Cli, Command};

/// Runs one command to completion.
///
/// # Errors
/// Whatever the command met, with context.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    let default_level = match cli.command {
        Command::Agent(_) => "info",
        _ => "warn",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("ATOLL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();

    // Blocking work is the store's reads; a few threads serve them, and each
    // thread more would keep its own allocator caches resident.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .max_blocking_threads(8)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        match cli.command {
            Command::Agent(args) => agent(args).await,
            Command::Apply { file, store } => {
                let store = stores::open(&store).await?;
                let report = apply::apply_path(&store, &file).await?;
                print!("{report}");
                Ok(())
            }
            Command::Get {
                what,
                output,
                store,
            } => {
                let store = stores::open(&store).await?;
                print!("{}", inspect::get(&store, what, output).await?);
                Ok(())
            }
            Command::Describe { kind, name, store } => {
                let store = stores::open(&store).await?;
                print!("{}", inspect::describe(&store, kind, &name).await?);
                Ok(())
            }
            Command::Delete { kind, name, store } => {
                let store = stores::open(&store).await?;
                print!("{}", admin::delete(&store, kind, &name).await?);
                Ok(())
            }
            Command::Release {
                target,
                ifname,
                store,
            } => {
                let store = stores::open(&store).await?;
                print!("{}", admin::release(&store, &target, &ifname).await?);
                Ok(())
            }
            Command::Check { store } => {
                let store = stores::open(&store).await?;
                let report = admin::check(&store).await?;
                print!("{report}");
                if !report.is_clean() {
                    anyhow::bail!("{} problem(s) found", report.problems.len());
                }
                Ok(())
            }
            Command::Gc {
                node,
                network,
                keep,
                store,
            } => {
                let store = stores::open(&store).await?;
                print!(
                    "{}",
                    admin::gc(&store, &node, network.as_deref(), &keep).await?
                );
                Ok(())
            }
            Command::Demo(args) => demo::run(args).await,
        }
    })
}

/// Parses `k=v,k=v` labels.
///
/// # Errors
/// An entry without `=` or with an empty key.
pub fn parse_labels(pairs: &[String]) -> anyhow::Result<StringMap> {
    let mut out = StringMap::new();
    for p in pairs.iter().filter(|p| !p.trim().is_empty()) {
        let (k, v) = p
            .split_once('=')
            .filter(|(k, _)| !k.trim().is_empty())
            .with_context(|| format!("label {p:?} is not key=value"))?;
        out.insert(k.trim().to_string(), v.trim().to_string());
    }
    Ok(out)
}

async fn agent(args: AgentArgs) -> anyhow::Result<()> {
    let labels = if args.node_labels.is_empty() {
        None
    } else {
        Some(parse_labels(&args.node_labels)?)
    };
    let store = stores::open(&args.store).await?;
    let listener = atoll_agent::bind(&args.socket).await?;
    let service = atoll_agent::Service::start(store, &args.node_name, labels)
        .await
        .with_context(|| format!("starting the agent of node {}", args.node_name))?;
    tracing::info!(node = %args.node_name, socket = %args.socket.display(), "agent serving");
    let service = Arc::new(service);
    let follower = service.follow_claims();
    atoll_agent::serve(service, listener, args.socket.clone(), shutdown_signal()).await;
    if let Some(task) = follower {
        task.abort();
    }
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutdown requested");
}

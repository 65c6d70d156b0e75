//! The atoll node agent.
//!
//! - [`service`]: allocation for one node through the engine and the store.
//! - [`server`]: the unix socket the `atoll-ipam` plugin talks to.

#![warn(missing_docs)]

pub mod server;
pub mod service;

pub use server::{bind, serve, ServeError};
pub use service::{AddRequest, AddResult, AgentError, Service};

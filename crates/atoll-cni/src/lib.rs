//! The CNI side of atoll: what the `atoll-ipam` plugin does, as a library.
//!
//! The plugin is executed by a main CNI plugin (bridge, macvlan, ipvlan, ...)
//! for every attachment. It reads the verb and the attachment from `CNI_*`
//! environment variables and the network config from stdin, asks the node
//! agent over a unix socket ([`wire`]), and prints the result or the CNI
//! error object on stdout. It decides nothing itself: pool choice and
//! allocation happen in the agent.
//!
//! Spec versions 0.3.0, 0.3.1, 0.4.0, 1.0.0 and 1.1.0; verbs ADD, DEL, CHECK,
//! VERSION, GC and STATUS.
//!
//! [`run`] is the whole plugin minus the process: the binary reads its
//! environment and stdin, calls it, and prints what it returns, so the
//! behaviour is tested here without executing anything.
//!
//! This crate depends on neither tokio nor the rest of atoll, so that the
//! plugin stays small and starts fast; the agent depends on it for [`wire`].
//! It logs nothing: stdout carries the result, and the error object says
//! everything an operator needs.
//!
//! ```
//! use atoll_cni::{run, Environ};
//!
//! let env = Environ::new().with("CNI_COMMAND", "VERSION");
//! let out = run(&env, br#"{"cniVersion": "1.0.0"}"#);
//! assert_eq!(out.exit_code, 0);
//! assert_eq!(
//!     String::from_utf8(out.stdout).unwrap(),
//!     r#"{"cniVersion":"1.0.0","supportedVersions":["0.3.0","0.3.1","0.4.0","1.0.0","1.1.0"]}"#
//! );
//! ```

#![deny(missing_docs)]

pub mod codes;
pub mod config;
pub mod env;
pub mod error;
pub mod plugin;
pub mod result;
pub mod wire;

pub use env::Environ;
pub use error::CniError;
pub use plugin::{run, Outcome};

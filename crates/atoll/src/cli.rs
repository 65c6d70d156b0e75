//! The command line of `atoll`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// atoll: IP address management by node affinity for clusters whose nodes
/// sit in several subnets.
#[derive(Debug, Parser)]
#[command(name = "atoll", version, about)]
pub struct Cli {
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Where the state lives, for every command.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// `embedded:<path>` (SQLite) or `etcd:<endpoint>[,<endpoint>...]`.
    #[arg(
        long,
        env = "ATOLL_STORE",
        default_value = "embedded:/var/lib/atoll/atoll.db",
        global = true
    )]
    pub store: String,
    /// Key prefix in etcd.
    #[arg(
        long,
        env = "ATOLL_ETCD_PREFIX",
        default_value = "/atoll/",
        global = true
    )]
    pub etcd_prefix: String,
    /// CA certificate for etcd over TLS.
    #[arg(long, env = "ATOLL_ETCD_CA", global = true)]
    pub etcd_ca: Option<PathBuf>,
    /// Client certificate for etcd.
    #[arg(long, env = "ATOLL_ETCD_CERT", global = true)]
    pub etcd_cert: Option<PathBuf>,
    /// Client key for etcd.
    #[arg(long, env = "ATOLL_ETCD_KEY", global = true)]
    pub etcd_key: Option<PathBuf>,
    /// etcd user name.
    #[arg(long, env = "ATOLL_ETCD_USER", global = true)]
    pub etcd_user: Option<String>,
    /// Longest one etcd operation may take, over every endpoint it tries, in
    /// seconds. Longer than a leader election, so that a failover delays
    /// ADDs instead of failing them; a cluster without quorum still fails
    /// at once.
    #[arg(long, env = "ATOLL_ETCD_TIMEOUT", default_value_t = 5.0, global = true)]
    pub etcd_timeout: f64,
    /// etcd password (prefer the environment variable).
    #[arg(
        long,
        env = "ATOLL_ETCD_PASSWORD",
        global = true,
        hide_env_values = true
    )]
    pub etcd_password: Option<String>,
}

/// Output formats of `get`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// A table.
    Table,
    /// YAML documents.
    Yaml,
    /// JSON.
    Json,
}

/// What `get` lists.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum GetWhat {
    /// Subnets with counters.
    #[value(alias = "subnet")]
    Subnets,
    /// Pools with counters and affinity.
    #[value(alias = "pool", alias = "ippools", alias = "ippool")]
    Pools,
    /// Nodes with labels and pools.
    #[value(alias = "node")]
    Nodes,
    /// Held addresses.
    #[value(alias = "allocation", alias = "claims")]
    Allocations,
}

/// What `describe` and `delete` take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ObjectKind {
    /// A subnet.
    Subnet,
    /// A pool.
    #[value(alias = "ippool")]
    Pool,
    /// A node.
    Node,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the node agent: serve the CNI plugin on a unix socket.
    Agent(AgentArgs),
    /// Create or update resources from a file or directory of YAML/JSON.
    Apply {
        /// File or directory (`-` for stdin).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Where the state lives.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// List subnets, pools, nodes or allocations.
    Get {
        /// What to list.
        what: GetWhat,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value = "table")]
        output: Output,
        /// Where the state lives.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Show one subnet, pool or node in detail.
    Describe {
        /// Kind.
        kind: ObjectKind,
        /// Name.
        name: String,
        /// Where the state lives.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Delete a subnet, pool or node.
    Delete {
        /// Kind.
        kind: ObjectKind,
        /// Name.
        name: String,
        /// Where the state lives.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Release an address, or everything a container holds.
    Release {
        /// An address, or a container ID (with --ifname).
        target: String,
        /// Interface, when the target is a container ID.
        #[arg(long, default_value = "eth0")]
        ifname: String,
        /// Where the state lives.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Audit: addresses held twice, holders outside their pool, claims whose
    /// pool or subnet is gone. Exits non-zero when something is found.
    Check {
        /// Where the state lives.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Release every claim of a node whose container is not listed.
    Gc {
        /// The node.
        #[arg(long)]
        node: String,
        /// Only claims of this CNI network (every network when absent).
        #[arg(long)]
        network: Option<String>,
        /// Live attachments as `container[/ifname]`, comma separated.
        #[arg(long, value_delimiter = ',')]
        keep: Vec<String>,
        /// Where the state lives.
        #[command(flatten)]
        store: StoreArgs,
    },
    /// The quick start: six nodes, three zones, three subnets, on a
    /// temporary embedded store, through the real plugin binary.
    Demo(DemoArgs),
}

/// Options of `atoll agent`.
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// This node's name.
    #[arg(long, env = "ATOLL_NODE_NAME")]
    pub node_name: String,
    /// Labels of this node, `k=v,k=v`; they replace the stored labels.
    #[arg(long, value_delimiter = ',')]
    pub node_labels: Vec<String>,
    /// The socket the plugin talks to.
    #[arg(long, default_value = "/run/atoll/agent.sock")]
    pub socket: PathBuf,
    /// Where the state lives.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Options of `atoll demo`.
#[derive(Debug, Clone, Args)]
pub struct DemoArgs {
    /// The manifests to apply.
    #[arg(long, default_value = "examples")]
    pub examples: PathBuf,
    /// The `atoll-ipam` binary (default: beside this one).
    #[arg(long)]
    pub plugin: Option<PathBuf>,
    /// Keep the temporary directory.
    #[arg(long)]
    pub keep: bool,
}

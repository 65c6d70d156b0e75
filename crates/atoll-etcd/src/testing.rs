//! A real three-member etcd cluster on 127.0.0.1, for tests (behind the
//! cargo feature `testing`, off by default).
//!
//! Each member runs `/usr/bin/etcd` (Debian's etcd-server) with its own data
//! directory under one temporary directory (on tmpfs when `/dev/shm` exists)
//! and two ports: member `n` serves clients on `base + 2n` and its peers on
//! `base + 2n + 1`. [`Ports`] says how the base is chosen. A cluster may
//! serve its clients over TLS, with certificates made by `openssl`.
//!
//! This module starts, kills, stops and restarts members; how a test
//! learns that a member is ready (a client of the crate, or `etcdctl`) is
//! up to the test. Dropping an [`EtcdCluster`] kills every member and
//! removes the data, also when a test panics; a panicking test prints the
//! end of each member's log first.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// The etcd server.
pub const ETCD: &str = "/usr/bin/etcd";

/// Members of every cluster.
pub const MEMBERS: usize = 3;

/// Ports per block of [`Ports::FreeFrom`] (six used, the rest left as a
/// gap).
const BLOCK: u32 = 10;

/// Blocks [`Ports::FreeFrom`] looks through.
const BLOCKS: u32 = 1_000;

/// Clusters this process placed with [`Ports::FreeFrom`]; the next one
/// looks at the next block first.
static PLACED: AtomicU32 = AtomicU32::new(0);

/// How the ports of a cluster are chosen.
#[derive(Debug, Clone, Copy)]
pub enum Ports {
    /// Exactly `base..base + 6`; panics when one of them is taken (a stale
    /// etcd of an earlier run). For tests that give each cluster its own
    /// fixed base.
    Fixed(u16),
    /// The first block of ten ports whose six ports are free, among the
    /// thousand blocks from the given port on, starting at a block chosen
    /// by the process ID and moving on with every cluster, so that several
    /// test processes (and several clusters of one process) do not meet.
    FreeFrom(u16),
}

impl Ports {
    /// The base port.
    ///
    /// # Panics
    ///
    /// When a fixed port is taken, or every block is.
    pub fn choose(self) -> u16 {
        match self {
            Ports::Fixed(base) => {
                for port in base..base + 2 * MEMBERS as u16 {
                    assert!(
                        TcpListener::bind(("127.0.0.1", port)).is_ok(),
                        "port {port} is in use: a stale etcd from an earlier run? (ports \
                         {base}..{})",
                        base + 2 * MEMBERS as u16
                    );
                }
                base
            }
            Ports::FreeFrom(first) => free_base(u32::from(first)),
        }
    }
}

/// The first port of the next block from `first` whose six ports all are
/// free.
fn free_base(first: u32) -> u16 {
    let start = std::process::id() % 500;
    for _ in 0..BLOCKS {
        let k = PLACED.fetch_add(1, Ordering::Relaxed);
        let base = first + ((start + k) % BLOCKS) * BLOCK;
        let free = (base..base + 2 * MEMBERS as u32)
            .all(|port| TcpListener::bind(("127.0.0.1", port as u16)).is_ok());
        if free {
            return base as u16;
        }
    }
    panic!(
        "every block of ports in {first}..{} is taken",
        first + BLOCKS * BLOCK
    )
}

/// PEM files of a cluster serving TLS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The CA of every certificate.
    pub ca: PathBuf,
    /// The members' certificate (for 127.0.0.1).
    pub server_cert: PathBuf,
    /// The members' key.
    pub server_key: PathBuf,
    /// A client certificate signed by the CA.
    pub client_cert: PathBuf,
    /// Its key.
    pub client_key: PathBuf,
}

/// A three-member cluster whose members this helper runs.
pub struct EtcdCluster {
    dir: tempfile::TempDir,
    base: u16,
    members: Vec<Option<Child>>,
    tls: Option<TlsFiles>,
    /// Credentials of the test's own clients, once it has enabled auth.
    pub user: Option<(String, String)>,
}

impl EtcdCluster {
    /// Starts the three members on the ports `ports` chooses, serving
    /// clients over TLS with client certificates required when `tls` is
    /// set. Does not wait for them to serve.
    ///
    /// # Panics
    ///
    /// When etcd is not installed, a port is taken (see [`Ports`]) or a
    /// member cannot be started.
    pub fn launch(ports: Ports, tls: bool) -> EtcdCluster {
        assert!(
            Path::new(ETCD).is_file(),
            "{ETCD} is missing: apt-get install etcd-server"
        );
        let base = ports.choose();
        let dir = temp_dir("atoll-etcd-test-");
        let tls = tls.then(|| make_certificates(dir.path()));
        let mut cluster = EtcdCluster {
            dir,
            base,
            members: (0..MEMBERS).map(|_| None).collect(),
            tls,
            user: None,
        };
        for n in 0..MEMBERS {
            cluster.spawn(n);
        }
        cluster
    }

    /// The first port of the cluster.
    pub fn base(&self) -> u16 {
        self.base
    }

    /// The client URL of member `n`.
    pub fn endpoint(&self, n: usize) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.base + 2 * n as u16)
    }

    fn peer_url(&self, n: usize) -> String {
        format!("http://127.0.0.1:{}", self.base + 2 * n as u16 + 1)
    }

    /// Every client URL.
    pub fn endpoints(&self) -> Vec<String> {
        (0..MEMBERS).map(|n| self.endpoint(n)).collect()
    }

    /// `etcd:<every endpoint>`, the `--store` of atoll.
    pub fn address(&self) -> String {
        format!("etcd:{}", self.endpoints().join(","))
    }

    /// `etcd:<every endpoint>`, starting with member `first`, so that a
    /// store opened on it prefers that member.
    pub fn address_from(&self, first: usize) -> String {
        let endpoints: Vec<String> = (0..MEMBERS)
            .map(|n| self.endpoint((first + n) % MEMBERS))
            .collect();
        format!("etcd:{}", endpoints.join(","))
    }

    /// The certificates, for a cluster started with TLS.
    pub fn tls(&self) -> Option<&TlsFiles> {
        self.tls.as_ref()
    }

    /// Returns true if and only if member `n` has been started and not
    /// killed or stopped since (it may have exited on its own).
    pub fn is_running(&self, n: usize) -> bool {
        self.members[n].is_some()
    }

    /// Returns the exit status of member `n` if it has exited on its own
    /// (and forgets it, so that it can be started again).
    pub fn exited(&mut self, n: usize) -> Option<std::process::ExitStatus> {
        let status = self.members[n].as_mut()?.try_wait().ok()??;
        self.members[n] = None;
        Some(status)
    }

    fn log_path(&self, n: usize) -> PathBuf {
        self.dir.path().join(format!("m{n}.log"))
    }

    /// Starts member `n` (again, on its data directory, after a kill or a
    /// stop); does not wait for it to serve.
    ///
    /// # Panics
    ///
    /// When the member runs already or cannot be started.
    pub fn spawn(&mut self, n: usize) {
        assert!(self.members[n].is_none(), "member {n} runs already");
        let initial: Vec<String> = (0..MEMBERS)
            .map(|m| format!("m{m}={}", self.peer_url(m)))
            .collect();
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path(n))
            .expect("opening the member's log");
        let mut command = Command::new(ETCD);
        if let Some(tls) = &self.tls {
            command
                .arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        // On a restart the data directory exists and etcd ignores the
        // initial-cluster flags: the member rejoins with what it stored.
        let child = command
            .arg(format!("--name=m{n}"))
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join(format!("m{n}")).display()
            ))
            .arg(format!("--listen-client-urls={}", self.endpoint(n)))
            .arg(format!("--advertise-client-urls={}", self.endpoint(n)))
            .arg(format!("--listen-peer-urls={}", self.peer_url(n)))
            .arg(format!(
                "--initial-advertise-peer-urls={}",
                self.peer_url(n)
            ))
            .arg(format!("--initial-cluster={}", initial.join(",")))
            .arg(format!("--initial-cluster-token=atoll-test-{}", self.base))
            .arg("--initial-cluster-state=new")
            .arg("--logger=zap")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("cloning the log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {ETCD}: {e}"));
        self.members[n] = Some(child);
    }

    /// Kills member `n` with SIGKILL, as a crash or a power loss would, and
    /// waits for it to exit.
    ///
    /// # Panics
    ///
    /// When the member is not running.
    pub fn kill(&mut self, n: usize) {
        let mut child = self.members[n]
            .take()
            .unwrap_or_else(|| panic!("member {n} is not running"));
        let _ = child.kill();
        let _ = child.wait();
    }

    /// Stops member `n` the way an operator does (SIGTERM: it leaves
    /// cleanly) and waits for it to exit; SIGKILL after ten seconds.
    ///
    /// # Panics
    ///
    /// When the member is not running.
    pub fn stop(&mut self, n: usize) {
        let mut child = self.members[n]
            .take()
            .unwrap_or_else(|| panic!("member {n} is not running"));
        // SAFETY: kill(2) on the pid of a child this helper has not reaped.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline && matches!(child.try_wait(), Ok(None)) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if matches!(child.try_wait(), Ok(None)) {
            let _ = child.kill();
        }
        let _ = child.wait();
    }

    /// The last 4000 bytes of member `n`'s log.
    pub fn log_tail(&self, n: usize) -> String {
        let Ok(mut file) = File::open(self.log_path(n)) else {
            return String::new();
        };
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let _ = file.seek(SeekFrom::Start(len.saturating_sub(4000)));
        let mut text = String::new();
        let _ = file.read_to_string(&mut text);
        text
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for n in 0..MEMBERS {
                eprintln!(
                    "--- end of the log of etcd member {n} ---\n{}",
                    self.log_tail(n)
                );
            }
        }
        for mut child in self.members.iter_mut().filter_map(Option::take) {
            let _ = child.kill();
            let _ = child.wait();
        }
        // The TempDir removes the data directories after this.
    }
}

/// A temporary directory, on tmpfs when there is one (etcd syncs its log
/// on every commit; the tests are not about the disk).
///
/// # Panics
///
/// When the directory cannot be created.
pub fn temp_dir(prefix: &str) -> tempfile::TempDir {
    let shm = Path::new("/dev/shm");
    let mut builder = tempfile::Builder::new();
    builder.prefix(prefix);
    if shm.is_dir() {
        builder.tempdir_in(shm)
    } else {
        builder.tempdir()
    }
    .expect("creating a temporary directory")
}

/// Makes a CA, a certificate for the members (IP 127.0.0.1) and a client
/// certificate, with `openssl`, in `dir`.
fn make_certificates(dir: &Path) -> TlsFiles {
    let path = |name: &str| dir.join(name);
    let run = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("run openssl (apt-get install openssl)");
        assert!(status.success(), "openssl {args:?} failed");
    };
    let key = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"],
        &key[..],
        &[
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
            "-days",
            "2",
            "-subj",
            "/CN=atoll test CA",
        ],
    ]
    .concat());
    std::fs::write(
        path("server.ext"),
        "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n",
    )
    .expect("write server.ext");
    std::fs::write(path("client.ext"), "extendedKeyUsage=clientAuth\n").expect("write client.ext");
    for who in ["server", "client"] {
        let (key_file, csr, pem, ext) = (
            format!("{who}.key"),
            format!("{who}.csr"),
            format!("{who}.pem"),
            format!("{who}.ext"),
        );
        run(&[
            &["req"],
            &key[..],
            &[
                "-keyout",
                &key_file,
                "-out",
                &csr,
                "-subj",
                &format!("/CN=atoll-{who}"),
            ],
        ]
        .concat());
        run(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &pem,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
    }
    TlsFiles {
        ca: path("ca.pem"),
        server_cert: path("server.pem"),
        server_key: path("server.key"),
        client_cert: path("client.pem"),
        client_key: path("client.key"),
    }
}

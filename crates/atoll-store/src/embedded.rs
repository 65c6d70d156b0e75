//! The embedded backend: every object and every claim in one SQLite file.
//!
//! # Layout
//! Three tables, described by `PRAGMA user_version` ([`SCHEMA_VERSION`]):
//!
//! - `objects (kind, key, value, revision)`: the JSON documents, keyed by
//!   (kind, key). `revision` comes from one counter for the whole file, so it
//!   changes on every write and never goes back.
//! - `meta (name, value)`: the counters `generation` (bumped by every
//!   [`Store::apply`]) and `revision`.
//! - `claims`: one row per held address, primary key (subnet, ip), indexed
//!   by holder (container ID, interface). Listing one node's claims (GC, the
//!   CLI) scans the table: rare enough that an index, which every claim would
//!   have to write, does not pay.
//!
//! # Why a claim is atomic
//! A claim is one `INSERT` that does nothing when the primary key (subnet,
//! ip) exists, run in a transaction that holds SQLite's write lock
//! (`BEGIN IMMEDIATE`). Only one connection, in any process, holds that lock
//! at a time, so the check and the insert cannot interleave with another
//! writer: of any number of claims of one address exactly one inserts the
//! row, and the others read its holder in the same transaction.
//!
//! # Durability
//! The file is in WAL mode with `synchronous=FULL`: a transaction's commit
//! returns only once the log is synced to disk, and every answer (`Won`,
//! `Taken`, released, a revision, a generation) is sent after the commit
//! returned. A crash of any process, or of the host, keeps every answered
//! write. Several processes (agents, the CLI) may open the file at once; a
//! writer waits up to [`Options::busy_timeout`] for the lock and then reports
//! [`StoreError::Unavailable`].
//!
//! # Group commit
//! A disk sync costs far more than an insert, so writes are not synced one
//! by one. Every write of a process goes to one writer thread through a
//! queue. The thread takes whatever is queued (at most [`MAX_BATCH`] jobs),
//! runs them in one transaction, each decided on its own (two claims of one
//! address in one batch: the first wins, the second is `Taken`), commits
//! once and then answers each caller. It never waits for more work to
//! arrive: a lone caller gets its answer after one commit, and callers that
//! arrive during a commit share the next one. If one write of a batch fails
//! (an I/O error, say), the batch is rolled back and each of its writes is
//! run again alone, so one bad write does not fail the others.
//!
//! Reads use a small pool of separate connections on blocking threads; in
//! WAL mode they do not wait for the writer.

use std::fmt;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use rusqlite::TransactionBehavior;
use rusqlite::{params, Connection, ErrorCode, OpenFlags, Row, Transaction};
use tokio::sync::{mpsc, oneshot};
use tracing::{debug, info, warn};

use crate::{Attachment, Change, Claim, ClaimOutcome, Kind, Object, Store, StoreError};

/// Page size of new files, in bytes.
const PAGE_SIZE: u32 = 1024;

/// The schema version this build writes, kept in `PRAGMA user_version`.
pub const SCHEMA_VERSION: i64 = 1;

/// How long a writer or reader waits for another connection's lock, unless
/// [`Options::busy_timeout`] says otherwise.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of [`EmbeddedStore::open_with`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// How long a write waits for the lock held by another connection (in
    /// this process or another) before it fails with
    /// [`StoreError::Unavailable`]. Default [`BUSY_TIMEOUT`].
    pub busy_timeout: Duration,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            busy_timeout: BUSY_TIMEOUT,
        }
    }
}

/// The most writes committed in one transaction.
pub const MAX_BATCH: usize = 512;

/// Writes that may wait in the queue before callers wait to enqueue.
const QUEUE_DEPTH: usize = 4096;

/// Read connections kept open between reads.
const IDLE_READERS: usize = 8;

/// The tables of schema version 1. `STRICT` makes SQLite refuse values of
/// the wrong type, whoever writes them.
const SCHEMA: &str = "
CREATE TABLE objects (
    kind TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    revision INTEGER NOT NULL,
    PRIMARY KEY (kind, key)
) STRICT, WITHOUT ROWID;

CREATE TABLE meta (
    name TEXT NOT NULL PRIMARY KEY,
    value INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

INSERT INTO meta (name, value) VALUES ('generation', 0), ('revision', 0);

CREATE TABLE claims (
    subnet TEXT NOT NULL,
    ip TEXT NOT NULL,
    pool TEXT NOT NULL,
    container_id TEXT NOT NULL,
    ifname TEXT NOT NULL,
    node TEXT NOT NULL,
    app TEXT NOT NULL,
    borrowed INTEGER NOT NULL,
    created INTEGER NOT NULL,
    network TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (subnet, ip)
) STRICT, WITHOUT ROWID;

CREATE INDEX claims_by_holder ON claims (container_id, ifname);
";

const CLAIM_COLUMNS: &str =
    "subnet, ip, pool, container_id, ifname, node, app, borrowed, created, network";

/// The embedded store: one SQLite file, shared safely by the processes of
/// one host.
///
/// # Guarantees
/// Those of the [crate] documentation: claims are atomic across
/// processes, every answered write is on disk, `apply` is all or nothing.
///
/// # Caveats
/// A write whose future is dropped before it completes may still be
/// committed (it is skipped only if the writer thread has not started it).
/// A caller that gives up on a claim should release the address.
pub struct EmbeddedStore {
    describe: String,
    queue: mpsc::Sender<Job>,
    readers: Arc<Readers>,
}

impl fmt::Debug for EmbeddedStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmbeddedStore")
            .field("store", &self.describe)
            .finish_non_exhaustive()
    }
}

impl EmbeddedStore {
    /// Opens the file with the default [`Options`], creating it, its parent
    /// directories and the schema if needed, and starts the writer thread.
    ///
    /// Blocks while it opens the file; a caller on an async runtime that
    /// cannot afford up to [`BUSY_TIMEOUT`] of waiting for another process's
    /// lock should call it from a blocking thread.
    ///
    /// # Errors
    /// - [`StoreError::BadAddress`] for an empty path or `:memory:`.
    /// - [`StoreError::Unavailable`] if the directory or file cannot be
    ///   created or opened, or another process holds the lock too long.
    /// - [`StoreError::Corrupt`] if the file is not a SQLite database.
    /// - [`StoreError::Backend`] if the file is another program's database or
    ///   was written by a newer atoll.
    pub fn open(path: impl AsRef<Path>) -> Result<EmbeddedStore, StoreError> {
        EmbeddedStore::open_with(path, &Options::default())
    }

    /// Opens the file like [`EmbeddedStore::open`], with the given options.
    ///
    /// # Errors
    /// As [`EmbeddedStore::open`].
    pub fn open_with(
        path: impl AsRef<Path>,
        options: &Options,
    ) -> Result<EmbeddedStore, StoreError> {
        let path = path.as_ref().to_path_buf();
        let describe = format!("embedded:{}", path.display());
        if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" {
            return Err(StoreError::BadAddress {
                given: describe,
                reason: "expected the path of a file".into(),
            });
        }

        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| StoreError::Unavailable {
                store: describe.clone(),
                reason: format!("cannot create directory {}: {e}", parent.display()),
            })?;
        }

        // The writer sets up the file (WAL, schema) before anyone reads it.
        let timeout = options.busy_timeout;
        let mut writer = open_connection(&path, &describe, timeout)?;
        // Rows are small and each claim dirties a page of the holder index
        // somewhere: small pages make each commit write less. Takes effect
        // only on a new file (before WAL mode); an existing file keeps its size.
        writer
            .pragma_update(None, "page_size", PAGE_SIZE)
            .map_err(|e| sqlite_error(&describe, &e))?;
        use_wal(&writer, &describe, timeout)?;
        writer
            .pragma_update(None, "synchronous", "FULL")
            .map_err(|e| sqlite_error(&describe, &e))?;
        let created = ensure_schema(&mut writer, &describe)?;

        // Open one reader now so that a file readers cannot use fails here.
        let readers = Arc::new(Readers {
            path: path.clone(),
            describe: describe.clone(),
            busy_timeout: timeout,
            idle: Mutex::new(Vec::new()),
        });
        let reader = readers.take()?;
        readers.give_back(reader);

        let (queue, jobs) = mpsc::channel(QUEUE_DEPTH);
        let thread_store = describe.clone();
        std::thread::Builder::new()
            .name("atoll-store-writer".into())
            .spawn(move || run_writer(writer, jobs, thread_store))
            .map_err(|e| StoreError::Backend {
                store: describe.clone(),
                reason: format!("cannot start the writer thread: {e}"),
            })?;

        info!(store = %describe, schema = SCHEMA_VERSION, created, "opened embedded store");
        Ok(EmbeddedStore {
            describe,
            queue,
            readers,
        })
    }

    /// Sends one write to the writer thread and waits for its answer.
    async fn write(&self, op: Op) -> Result<Answer, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.queue
            .send(Job { op, reply })
            .await
            .map_err(|_| self.writer_gone())?;
        answer.await.map_err(|_| self.writer_gone())?
    }

    /// Runs a read on a pooled connection on a blocking thread.
    async fn read<T, F>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &str) -> Result<T, StoreError> + Send + 'static,
    {
        let readers = Arc::clone(&self.readers);
        tokio::task::spawn_blocking(move || readers.run(read))
            .await
            .map_err(|e| StoreError::Backend {
                store: self.describe.clone(),
                reason: format!("read task failed: {e}"),
            })?
    }

    fn writer_gone(&self) -> StoreError {
        StoreError::Unavailable {
            store: self.describe.clone(),
            reason: "the writer thread has stopped".into(),
        }
    }

    fn unexpected(&self, answer: Answer) -> StoreError {
        StoreError::Backend {
            store: self.describe.clone(),
            reason: format!("internal error: unexpected answer {answer:?} from the writer"),
        }
    }
}

#[async_trait]
impl Store for EmbeddedStore {
    fn describe(&self) -> String {
        self.describe.clone()
    }

    async fn list(&self, kind: Kind) -> Result<Vec<Object>, StoreError> {
        self.read(move |conn, store| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT key, value, revision FROM objects WHERE kind = ?1 ORDER BY key",
                )
                .map_err(|e| sqlite_error(store, &e))?;
            let mut rows = stmt
                .query(params![kind.as_str()])
                .map_err(|e| sqlite_error(store, &e))?;
            let mut objects = Vec::new();
            while let Some(row) = rows.next().map_err(|e| sqlite_error(store, &e))? {
                objects.push(object_from_row(kind, row)?);
            }
            Ok(objects)
        })
        .await
    }

    async fn get(&self, kind: Kind, key: &str) -> Result<Option<Object>, StoreError> {
        let key = key.to_string();
        self.read(move |conn, store| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT key, value, revision FROM objects WHERE kind = ?1 AND key = ?2",
                )
                .map_err(|e| sqlite_error(store, &e))?;
            let mut rows = stmt
                .query(params![kind.as_str(), key])
                .map_err(|e| sqlite_error(store, &e))?;
            match rows.next().map_err(|e| sqlite_error(store, &e))? {
                Some(row) => object_from_row(kind, row).map(Some),
                None => Ok(None),
            }
        })
        .await
    }

    async fn put(
        &self,
        kind: Kind,
        key: &str,
        value: &serde_json::Value,
    ) -> Result<u64, StoreError> {
        if kind.is_resource() {
            return Err(StoreError::Backend {
                store: self.describe.clone(),
                reason: format!("{kind} are written with apply, not put (key {key})"),
            });
        }
        let value = encode(&self.describe, kind, key, value)?;
        match self
            .write(Op::Put {
                kind,
                key: key.to_string(),
                value,
            })
            .await?
        {
            Answer::Put(revision) => Ok(revision),
            other => Err(self.unexpected(other)),
        }
    }

    async fn generation(&self) -> Result<u64, StoreError> {
        // Agents ask this on every request, so it runs inline rather than on
        // the blocking pool: one indexed row read in WAL mode, which never
        // waits for the writer, costs less than the thread hand-off would.
        self.readers.run(|conn, store| {
            read_counter(conn, "generation").map_err(|e| sqlite_error(store, &e))
        })
    }

    async fn apply(&self, changes: &[Change], expected: u64) -> Result<u64, StoreError> {
        let mut encoded = Vec::with_capacity(changes.len());
        for change in changes {
            encoded.push(match change {
                Change::Put { kind, key, value } => Edit::Put {
                    kind: *kind,
                    key: key.clone(),
                    value: encode(&self.describe, *kind, key, value)?,
                },
                Change::Delete { kind, key } => Edit::Delete {
                    kind: *kind,
                    key: key.clone(),
                },
            });
        }
        match self
            .write(Op::Apply {
                edits: encoded,
                expected,
            })
            .await?
        {
            Answer::Applied(generation) => Ok(generation),
            other => Err(self.unexpected(other)),
        }
    }

    async fn claim(&self, claim: &Claim) -> Result<ClaimOutcome, StoreError> {
        match self.write(Op::Claim(claim.clone())).await? {
            Answer::Claim(outcome) => Ok(outcome),
            other => Err(self.unexpected(other)),
        }
    }

    async fn release(
        &self,
        subnet: &str,
        ip: IpAddr,
        holder: &Attachment,
    ) -> Result<bool, StoreError> {
        let op = Op::Release {
            subnet: subnet.to_string(),
            ip,
            holder: holder.clone(),
        };
        match self.write(op).await? {
            Answer::Released(deleted) => Ok(deleted),
            other => Err(self.unexpected(other)),
        }
    }

    async fn claims_of(&self, holder: &Attachment) -> Result<Vec<Claim>, StoreError> {
        let holder = holder.clone();
        self.read(move |conn, store| {
            let sql = format!(
                "SELECT {CLAIM_COLUMNS} FROM claims WHERE container_id = ?1 AND ifname = ?2"
            );
            query_claims(
                conn,
                store,
                &sql,
                params![holder.container_id, holder.ifname],
            )
        })
        .await
    }

    async fn list_claims(&self, node: Option<&str>) -> Result<Vec<Claim>, StoreError> {
        let node = node.map(str::to_string);
        self.read(move |conn, store| match node {
            Some(node) => {
                let sql = format!("SELECT {CLAIM_COLUMNS} FROM claims WHERE node = ?1");
                query_claims(conn, store, &sql, params![node])
            }
            None => {
                let sql = format!("SELECT {CLAIM_COLUMNS} FROM claims");
                query_claims(conn, store, &sql, params![])
            }
        })
        .await
    }
}

// ---------------------------------------------------------------------------
// Opening the file.

/// Opens a connection with the settings every connection of the store uses.
fn open_connection(path: &Path, store: &str, timeout: Duration) -> Result<Connection, StoreError> {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| sqlite_error(store, &e))?;
    conn.busy_timeout(timeout)
        .map_err(|e| sqlite_error(store, &e))?;
    Ok(conn)
}

/// Puts the file in WAL mode (a property of the file, kept across opens).
///
/// Switching needs a moment alone with the file, which several processes
/// opening a new file at once do not give each other: a busy answer is
/// retried until the timeout has passed.
fn use_wal(conn: &Connection, store: &str, timeout: Duration) -> Result<(), StoreError> {
    let deadline = Instant::now() + timeout;
    loop {
        let mode = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0));
        match mode {
            Ok(mode) if mode.eq_ignore_ascii_case("wal") => return Ok(()),
            Ok(mode) => {
                return Err(StoreError::Backend {
                    store: store.to_string(),
                    reason: format!("cannot use WAL journal mode: SQLite kept {mode:?}"),
                })
            }
            Err(e) if is_busy(&e) && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => return Err(sqlite_error(store, &e)),
        }
    }
}

/// Creates the schema in a new file, checks it in an existing one. Returns
/// true if it created it.
fn ensure_schema(conn: &mut Connection, store: &str) -> Result<bool, StoreError> {
    let sql_error = |e: rusqlite::Error| sqlite_error(store, &e);
    let version = user_version(conn).map_err(sql_error)?;
    if version == SCHEMA_VERSION {
        return Ok(false);
    }
    check_version(store, version)?;

    // Another process may be creating it right now: decide under the lock.
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(sql_error)?;
    let version = user_version(&tx).map_err(sql_error)?;
    check_version(store, version)?;
    if version == SCHEMA_VERSION {
        return Ok(false);
    }
    let tables: i64 = tx
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get(0))
        .map_err(sql_error)?;
    if tables > 0 {
        return Err(StoreError::Backend {
            store: store.to_string(),
            reason: "the file holds a database that is not an atoll store".into(),
        });
    }
    tx.execute_batch(SCHEMA).map_err(sql_error)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(sql_error)?;
    tx.commit().map_err(sql_error)?;
    Ok(true)
}

fn user_version(conn: &Connection) -> rusqlite::Result<i64> {
    conn.pragma_query_value(None, "user_version", |row| row.get(0))
}

fn check_version(store: &str, version: i64) -> Result<(), StoreError> {
    if version == 0 || version == SCHEMA_VERSION {
        return Ok(());
    }
    Err(StoreError::Backend {
        store: store.to_string(),
        reason: format!(
            "schema version {version} is not one this atoll knows (it writes {SCHEMA_VERSION})"
        ),
    })
}

// ---------------------------------------------------------------------------
// The writer thread.

/// A write waiting for the writer thread.
struct Job {
    op: Op,
    reply: oneshot::Sender<Result<Answer, StoreError>>,
}

/// What a job does.
#[derive(Debug)]
enum Op {
    Claim(Claim),
    Release {
        subnet: String,
        ip: IpAddr,
        holder: Attachment,
    },
    Put {
        kind: Kind,
        key: String,
        value: String,
    },
    Apply {
        edits: Vec<Edit>,
        expected: u64,
    },
}

/// A [`Change`] with its document already encoded.
#[derive(Debug)]
enum Edit {
    Put {
        kind: Kind,
        key: String,
        value: String,
    },
    Delete {
        kind: Kind,
        key: String,
    },
}

/// The answer to a job.
#[derive(Debug)]
enum Answer {
    Claim(ClaimOutcome),
    Released(bool),
    Put(u64),
    Applied(u64),
}

/// Why a batch was not committed.
enum BatchError {
    /// The write lock or transaction could not be had.
    Begin(rusqlite::Error),
    /// One job's statement failed; the batch was rolled back.
    Statement(rusqlite::Error),
    /// The commit (the disk sync) failed; the batch was rolled back.
    Commit(rusqlite::Error),
}

/// Takes the queued jobs, commits them in batches and answers them, until
/// the store is dropped.
fn run_writer(mut conn: Connection, mut queue: mpsc::Receiver<Job>, store: String) {
    // TODO: SQLite's automatic checkpoint runs inside the commit of whichever
    // batch fills the log past 1000 pages, adding a sync of the database file
    // to that batch's latency; a checkpoint thread would take it off the
    // claim path.
    while let Some(first) = queue.blocking_recv() {
        let mut jobs = vec![first];
        while jobs.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(job) => jobs.push(job),
                Err(_) => break,
            }
        }

        // A caller that went away before its write started gets nothing done.
        jobs.retain(|job| !job.reply.is_closed());
        commit_batch(&mut conn, jobs, &store);
    }
    debug!(%store, "writer thread stopped");
}

/// Runs jobs in one transaction and answers each, after the commit.
fn commit_batch(conn: &mut Connection, jobs: Vec<Job>, store: &str) {
    if jobs.is_empty() {
        return;
    }
    let started = Instant::now();
    match run_batch(conn, &jobs) {
        Ok(answers) => {
            debug!(
                store,
                jobs = answers.len(),
                micros = started.elapsed().as_micros() as u64,
                "committed"
            );
            for (job, answer) in jobs.into_iter().zip(answers) {
                // A caller that went away meanwhile does not need the answer.
                let _ = job.reply.send(answer);
            }
        }
        Err(BatchError::Statement(e)) if jobs.len() > 1 => {
            warn!(store, jobs = jobs.len(), error = %e, "a write failed; running each alone");
            for job in jobs {
                commit_batch(conn, vec![job], store);
            }
        }
        Err(BatchError::Begin(e) | BatchError::Statement(e) | BatchError::Commit(e)) => {
            warn!(store, jobs = jobs.len(), error = %e, "writes failed, nothing written");
            for job in jobs {
                let _ = job.reply.send(Err(sqlite_error(store, &e)));
            }
        }
    }
}

/// One transaction for all jobs. A job's own refusal (a conflict) is an
/// answer; an SQLite failure rolls back the whole batch.
fn run_batch(
    conn: &mut Connection,
    jobs: &[Job],
) -> Result<Vec<Result<Answer, StoreError>>, BatchError> {
    let tx = conn
        .transaction_with_behavior(TransactionBehavior::Immediate)
        .map_err(BatchError::Begin)?;
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut answers = Vec::with_capacity(jobs.len());
    for job in jobs {
        answers.push(execute(&tx, &job.op, now).map_err(BatchError::Statement)?);
    }
    tx.commit().map_err(BatchError::Commit)?;
    Ok(answers)
}

fn execute(
    tx: &Transaction<'_>,
    op: &Op,
    now: u64,
) -> rusqlite::Result<Result<Answer, StoreError>> {
    match op {
        Op::Claim(claim) => insert_claim(tx, claim, now).map(|outcome| Ok(Answer::Claim(outcome))),
        Op::Release { subnet, ip, holder } => {
            let deleted = tx
                .prepare_cached(
                    "DELETE FROM claims \
                     WHERE subnet = ?1 AND ip = ?2 AND container_id = ?3 AND ifname = ?4",
                )?
                .execute(params![
                    subnet,
                    ip.to_string(),
                    holder.container_id,
                    holder.ifname
                ])?;
            Ok(Ok(Answer::Released(deleted > 0)))
        }
        Op::Put { kind, key, value } => {
            put_object(tx, *kind, key, value).map(|r| Ok(Answer::Put(r)))
        }
        Op::Apply { edits, expected } => {
            let found = read_counter(tx, "generation")?;
            if found != *expected {
                return Ok(Err(StoreError::Conflict {
                    what: "subnets and pools".into(),
                    expected: *expected,
                    found,
                }));
            }
            for edit in edits {
                match edit {
                    Edit::Put { kind, key, value } => {
                        put_object(tx, *kind, key, value)?;
                    }
                    Edit::Delete { kind, key } => {
                        tx.prepare_cached("DELETE FROM objects WHERE kind = ?1 AND key = ?2")?
                            .execute(params![kind.as_str(), key])?;
                    }
                }
            }
            Ok(Ok(Answer::Applied(bump_counter(tx, "generation")?)))
        }
    }
}

/// Inserts the claim unless (subnet, ip) is held; then reads the holder.
fn insert_claim(tx: &Transaction<'_>, claim: &Claim, now: u64) -> rusqlite::Result<ClaimOutcome> {
    let ip = claim.ip.to_string();
    let inserted = tx
        .prepare_cached(&format!(
            "INSERT INTO claims ({CLAIM_COLUMNS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) \
             ON CONFLICT (subnet, ip) DO NOTHING"
        ))?
        .execute(params![
            claim.subnet,
            ip,
            claim.pool,
            claim.attachment.container_id,
            claim.attachment.ifname,
            claim.node,
            claim.app,
            claim.borrowed,
            i64::try_from(now).unwrap_or(i64::MAX),
            claim.network,
        ])?;
    if inserted == 1 {
        return Ok(ClaimOutcome::Won);
    }

    let holder = tx
        .prepare_cached("SELECT container_id, ifname FROM claims WHERE subnet = ?1 AND ip = ?2")?
        .query_row(params![claim.subnet, ip], |row| {
            Ok(Attachment {
                container_id: row.get(0)?,
                ifname: row.get(1)?,
            })
        })?;
    Ok(ClaimOutcome::Taken { holder })
}

/// Creates or replaces an object under a new revision.
fn put_object(tx: &Transaction<'_>, kind: Kind, key: &str, value: &str) -> rusqlite::Result<u64> {
    let revision = bump_counter(tx, "revision")?;
    tx.prepare_cached(
        "INSERT INTO objects (kind, key, value, revision) VALUES (?1, ?2, ?3, ?4) \
         ON CONFLICT (kind, key) \
         DO UPDATE SET value = excluded.value, revision = excluded.revision",
    )?
    .execute(params![kind.as_str(), key, value, revision as i64])?;
    Ok(revision)
}

fn read_counter(conn: &Connection, name: &str) -> rusqlite::Result<u64> {
    let value: i64 = conn
        .prepare_cached("SELECT value FROM meta WHERE name = ?1")?
        .query_row(params![name], |row| row.get(0))?;
    Ok(value.max(0) as u64)
}

fn bump_counter(conn: &Connection, name: &str) -> rusqlite::Result<u64> {
    let value: i64 = conn
        .prepare_cached("UPDATE meta SET value = value + 1 WHERE name = ?1 RETURNING value")?
        .query_row(params![name], |row| row.get(0))?;
    Ok(value.max(0) as u64)
}

fn encode(
    store: &str,
    kind: Kind,
    key: &str,
    value: &serde_json::Value,
) -> Result<String, StoreError> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend {
        store: store.to_string(),
        reason: format!("cannot encode {kind}/{key}: {e}"),
    })
}

// ---------------------------------------------------------------------------
// Readers.

/// A pool of read connections.
struct Readers {
    path: PathBuf,
    describe: String,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    fn run<T>(
        &self,
        read: impl FnOnce(&Connection, &str) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.take()?;
        let result = read(&conn, &self.describe);
        self.give_back(conn);
        result
    }

    fn take(&self) -> Result<Connection, StoreError> {
        // The pool is a plain list; a panic elsewhere cannot leave it broken.
        let pooled = self.idle.lock().unwrap_or_else(|e| e.into_inner()).pop();
        if let Some(conn) = pooled {
            return Ok(conn);
        }
        let conn = open_connection(&self.path, &self.describe, self.busy_timeout)?;
        conn.pragma_update(None, "query_only", true)
            .map_err(|e| sqlite_error(&self.describe, &e))?;
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() < IDLE_READERS {
            idle.push(conn);
        }
    }
}

fn object_from_row(kind: Kind, row: &Row<'_>) -> Result<Object, StoreError> {
    let key: String = row.get(0).map_err(|e| corrupt(format!("{kind}/?"), &e))?;
    let name = format!("{kind}/{key}");
    let text: String = row.get(1).map_err(|e| corrupt(name.clone(), &e))?;
    let value = serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        key: name.clone(),
        reason: format!("invalid JSON: {e}"),
    })?;
    let revision: i64 = row.get(2).map_err(|e| corrupt(name.clone(), &e))?;
    let revision = u64::try_from(revision).map_err(|_| StoreError::Corrupt {
        key: name,
        reason: format!("negative revision {revision}"),
    })?;
    Ok(Object {
        kind,
        key,
        value,
        revision,
    })
}

/// Runs a query of [`CLAIM_COLUMNS`]; the claims come sorted by subnet,
/// then address.
fn query_claims(
    conn: &Connection,
    store: &str,
    sql: &str,
    params: &[&dyn rusqlite::ToSql],
) -> Result<Vec<Claim>, StoreError> {
    let mut stmt = conn
        .prepare_cached(sql)
        .map_err(|e| sqlite_error(store, &e))?;
    let mut rows = stmt.query(params).map_err(|e| sqlite_error(store, &e))?;
    let mut claims = Vec::new();
    while let Some(row) = rows.next().map_err(|e| sqlite_error(store, &e))? {
        claims.push(claim_from_row(row)?);
    }
    claims.sort_by(|a, b| (&a.subnet, a.ip).cmp(&(&b.subnet, b.ip)));
    Ok(claims)
}

fn claim_from_row(row: &Row<'_>) -> Result<Claim, StoreError> {
    let subnet: String = row.get(0).map_err(|e| corrupt("claims/?".into(), &e))?;
    let ip: String = row
        .get(1)
        .map_err(|e| corrupt(format!("claims/{subnet}/?"), &e))?;
    let key = format!("claims/{subnet}/{ip}");
    let column = |i: usize| -> Result<String, StoreError> {
        row.get(i).map_err(|e| corrupt(key.clone(), &e))
    };
    let ip: IpAddr = ip.parse().map_err(|e| StoreError::Corrupt {
        key: key.clone(),
        reason: format!("bad address {ip:?}: {e}"),
    })?;
    let attachment = Attachment {
        container_id: column(3)?,
        ifname: column(4)?,
    };
    let borrowed: bool = row.get(7).map_err(|e| corrupt(key.clone(), &e))?;
    let created: i64 = row.get(8).map_err(|e| corrupt(key.clone(), &e))?;
    Ok(Claim {
        pool: column(2)?,
        node: column(5)?,
        app: column(6)?,
        network: column(9)?,
        subnet,
        ip,
        attachment,
        borrowed,
        created: created.max(0) as u64,
    })
}

// ---------------------------------------------------------------------------
// Errors.

fn corrupt(key: String, e: &rusqlite::Error) -> StoreError {
    StoreError::Corrupt {
        key,
        reason: e.to_string(),
    }
}

fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked)
    )
}

/// Sorts SQLite's failures into the store's error kinds.
fn sqlite_error(store: &str, e: &rusqlite::Error) -> StoreError {
    let reason = e.to_string();
    let store = store.to_string();
    match e.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::DiskFull
            | ErrorCode::ReadOnly
            | ErrorCode::PermissionDenied
            | ErrorCode::FileLockingProtocolFailed
            | ErrorCode::OutOfMemory,
        ) => StoreError::Unavailable { store, reason },
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt { key: store, reason }
        }
        _ => StoreError::Backend { store, reason },
    }
}

//! The server's SQLite database: sandbox records (the [`Store`] the service uses), lifetimes,
//! API keys (hashed) and the audit log. WAL mode, so readers never wait on the writer;
//! schema changes are numbered migrations (`rusqlite_migration`), applied on open.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use berth_runtimes::store::AgentRecord;
use berth_sandbox::sandbox::SandboxRecord;
use berth_sandbox::store::Store;
use berth_sandbox::SandboxError;
use rusqlite::{params, Connection, OptionalExtension};
use rusqlite_migration::{Migrations, M};
use serde::{Deserialize, Serialize};

/// Why the database could not be used.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("the server database {path}: {source}")]
    Sqlite {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("migrating the server database {path}: {message}")]
    Migration { path: PathBuf, message: String },
    #[error("no server database at {path}: run `berth server init` first")]
    Missing { path: PathBuf },
}

fn migrations() -> Migrations<'static> {
    Migrations::new(vec![
        M::up(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
         CREATE TABLE keys (
             name TEXT PRIMARY KEY,
             hash TEXT NOT NULL UNIQUE,
             admin INTEGER NOT NULL,
             created TEXT NOT NULL
         );
         CREATE TABLE sandboxes (
             id TEXT PRIMARY KEY,
             tenant TEXT NOT NULL,
             record TEXT NOT NULL,
             created TEXT NOT NULL,
             state TEXT NOT NULL,
             reason TEXT,
             deadline_ms INTEGER,
             paused_ms INTEGER,
             idle_timeout_ms INTEGER,
             on_timeout TEXT NOT NULL,
             last_active_ms INTEGER NOT NULL
         );
         CREATE INDEX sandboxes_tenant ON sandboxes (tenant);
         CREATE TABLE audit (
             id INTEGER PRIMARY KEY AUTOINCREMENT,
             at TEXT NOT NULL,
             key_name TEXT NOT NULL,
             action TEXT NOT NULL,
             sandbox TEXT,
             status INTEGER NOT NULL,
             outcome TEXT NOT NULL
         );",
        ),
        // Named agents: a tenant's agent owns a home volume (its CLI's sessions) that
        // outlives its sandboxes, and the sessions berth saw it make.
        M::up(
            "CREATE TABLE agents (
                 tenant TEXT NOT NULL,
                 name TEXT NOT NULL,
                 created TEXT NOT NULL,
                 record TEXT,
                 PRIMARY KEY (tenant, name)
             );",
        ),
    ])
}

/// What the server does when a sandbox's time is up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnTimeout {
    /// Remove it with everything it made.
    #[default]
    Kill,
    /// Stop it (it can be started again).
    Stop,
    /// Pause it (it can be resumed; its clock stops).
    Pause,
}

impl OnTimeout {
    fn as_str(self) -> &'static str {
        match self {
            Self::Kill => "kill",
            Self::Stop => "stop",
            Self::Pause => "pause",
        }
    }

    fn parse(text: &str) -> Self {
        match text {
            "stop" => Self::Stop,
            "pause" => Self::Pause,
            _ => Self::Kill,
        }
    }
}

/// A sandbox's row beside its record: whose it is and what the server enforces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lifetime {
    pub id: String,
    pub tenant: String,
    /// `running`, `paused`, `stopped`, or `gone` (with a reason).
    pub state: String,
    pub reason: Option<String>,
    /// When its time is up (ms since the epoch), if it has a timeout.
    pub deadline_ms: Option<i64>,
    /// Since when it is paused (its clock stands still meanwhile).
    pub paused_ms: Option<i64>,
    pub idle_timeout_ms: Option<i64>,
    pub on_timeout: OnTimeout,
    pub last_active_ms: i64,
}

/// One audited action.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AuditEntry {
    pub id: i64,
    pub at: String,
    pub key: String,
    pub action: String,
    pub sandbox: Option<String>,
    pub status: u16,
    pub outcome: String,
}

/// A tenant's named agent: its sessions once it ran (`record`), none before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerAgent {
    pub tenant: String,
    pub name: String,
    pub created: String,
    pub record: Option<AgentRecord>,
}

/// An API key as listed (never its value or hash).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct KeyInfo {
    pub name: String,
    pub admin: bool,
    pub created: String,
}

/// The server's database, shared by its tasks.
pub struct Db {
    path: PathBuf,
    conn: Mutex<Connection>,
    /// Where sandboxes' host directories go (`<state>/sandboxes/<id>`).
    state: PathBuf,
    /// Where the directories their containers mount go ([`berth_sandbox::host_dirs`]).
    runtime: Option<PathBuf>,
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

impl Db {
    /// The database file in a state directory.
    pub fn path_in(state: &Path) -> PathBuf {
        state.join("server.db")
    }

    /// Opens (creating when `create`) the database in `state` and migrates it; sandboxes'
    /// mounted directories go in `runtime` ([`berth_sandbox::host_dirs`]), else under `state`.
    pub fn open(state: &Path, runtime: Option<PathBuf>, create: bool) -> Result<Self, DbError> {
        let path = Self::path_in(state);
        if !create && !path.exists() {
            return Err(DbError::Missing { path });
        }
        let sqlite = |source| DbError::Sqlite {
            path: path.clone(),
            source,
        };
        std::fs::create_dir_all(state)
            .map_err(|e| sqlite(rusqlite::Error::ToSqlConversionFailure(Box::new(e))))?;
        let mut conn = Connection::open(&path).map_err(sqlite)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(sqlite)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(sqlite)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(sqlite)?;
        migrations()
            .to_latest(&mut conn)
            .map_err(|e| DbError::Migration {
                path: path.clone(),
                message: e.to_string(),
            })?;
        // The database holds key hashes: only its owner reads it.
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600));
        Ok(Self {
            path,
            conn: Mutex::new(conn),
            state: state.to_path_buf(),
            runtime,
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> Result<T, DbError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        f(&conn).map_err(|source| DbError::Sqlite {
            path: self.path.clone(),
            source,
        })
    }

    /// This server's id (made at init): on the labels of everything it makes.
    pub fn server_id(&self) -> Result<String, DbError> {
        self.with(|c| {
            let existing: Option<String> = c
                .query_row("SELECT value FROM meta WHERE key = 'server_id'", [], |r| {
                    r.get(0)
                })
                .optional()?;
            if let Some(id) = existing {
                return Ok(id);
            }
            let id = uuid::Uuid::new_v4().simple().to_string()[..12].to_string();
            c.execute(
                "INSERT INTO meta (key, value) VALUES ('server_id', ?1)",
                params![id],
            )?;
            Ok(id)
        })
    }

    // --- keys ---

    /// Stores a key's hash under a name; false if the name is taken.
    pub fn add_key(&self, name: &str, hash: &str, admin: bool) -> Result<bool, DbError> {
        self.with(|c| {
            let n = c.execute(
                "INSERT OR IGNORE INTO keys (name, hash, admin, created) VALUES (?1, ?2, ?3, ?4)",
                params![name, hash, admin, chrono::Utc::now().to_rfc3339()],
            )?;
            Ok(n == 1)
        })
    }

    /// The key name and admin flag for a hash.
    pub fn key_by_hash(&self, hash: &str) -> Result<Option<(String, bool)>, DbError> {
        self.with(|c| {
            c.prepare_cached("SELECT name, admin FROM keys WHERE hash = ?1")?
                .query_row(params![hash], |r| Ok((r.get(0)?, r.get(1)?)))
                .optional()
        })
    }

    pub fn keys(&self) -> Result<Vec<KeyInfo>, DbError> {
        self.with(|c| {
            let mut s = c.prepare("SELECT name, admin, created FROM keys ORDER BY created")?;
            let rows = s.query_map([], |r| {
                Ok(KeyInfo {
                    name: r.get(0)?,
                    admin: r.get(1)?,
                    created: r.get(2)?,
                })
            })?;
            rows.collect()
        })
    }

    pub fn remove_key(&self, name: &str) -> Result<bool, DbError> {
        self.with(|c| Ok(c.execute("DELETE FROM keys WHERE name = ?1", params![name])? == 1))
    }

    // --- lifetimes ---

    /// Adds a freshly made sandbox's lifetime row (its record is saved by the store).
    pub fn add_lifetime(&self, life: &Lifetime) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET tenant = ?2, state = ?3, deadline_ms = ?4, idle_timeout_ms = ?5,
                 on_timeout = ?6, last_active_ms = ?7 WHERE id = ?1",
                params![
                    life.id,
                    life.tenant,
                    life.state,
                    life.deadline_ms,
                    life.idle_timeout_ms,
                    life.on_timeout.as_str(),
                    life.last_active_ms
                ],
            )?;
            Ok(())
        })
    }

    fn lifetime_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Lifetime> {
        Ok(Lifetime {
            id: r.get(0)?,
            tenant: r.get(1)?,
            state: r.get(2)?,
            reason: r.get(3)?,
            deadline_ms: r.get(4)?,
            paused_ms: r.get(5)?,
            idle_timeout_ms: r.get(6)?,
            on_timeout: OnTimeout::parse(&r.get::<_, String>(7)?),
            last_active_ms: r.get(8)?,
        })
    }

    const LIFETIME_COLUMNS: &'static str = "id, tenant, state, reason, deadline_ms, paused_ms, idle_timeout_ms, on_timeout, last_active_ms";

    pub fn lifetime(&self, id: &str) -> Result<Option<Lifetime>, DbError> {
        self.with(|c| {
            c.prepare_cached(&format!(
                "SELECT {} FROM sandboxes WHERE id = ?1",
                Self::LIFETIME_COLUMNS
            ))?
            .query_row(params![id], Self::lifetime_row)
            .optional()
        })
    }

    /// Every sandbox that is not gone.
    pub fn lifetimes(&self) -> Result<Vec<Lifetime>, DbError> {
        self.with(|c| {
            let mut s = c.prepare(&format!(
                "SELECT {} FROM sandboxes WHERE state != 'gone' ORDER BY created",
                Self::LIFETIME_COLUMNS
            ))?;
            let rows = s.query_map([], Self::lifetime_row)?;
            rows.collect()
        })
    }

    /// Sets the state (and the reason, for `gone`).
    pub fn set_state(&self, id: &str, state: &str, reason: Option<&str>) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET state = ?2, reason = ?3 WHERE id = ?1",
                params![id, state, reason],
            )?;
            Ok(())
        })
    }

    /// Pauses the clock (the deadline moves on by the paused time at resume).
    pub fn pause_clock(&self, id: &str, at: i64) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET state = 'paused', paused_ms = COALESCE(paused_ms, ?2) WHERE id = ?1",
                params![id, at],
            )?;
            Ok(())
        })
    }

    /// Restarts the clock: the deadline moves by how long it stood still.
    pub fn resume_clock(&self, id: &str, at: i64) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET state = 'running',
                   deadline_ms = CASE WHEN deadline_ms IS NULL OR paused_ms IS NULL THEN deadline_ms
                                      ELSE deadline_ms + (?2 - paused_ms) END,
                   paused_ms = NULL, last_active_ms = ?2
                 WHERE id = ?1",
                params![id, at],
            )?;
            Ok(())
        })
    }

    /// A new deadline (`None`: no timeout).
    pub fn set_deadline(&self, id: &str, deadline_ms: Option<i64>) -> Result<(), DbError> {
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET deadline_ms = ?2, paused_ms = CASE WHEN paused_ms IS NULL THEN NULL ELSE ?3 END WHERE id = ?1",
                params![id, deadline_ms, now_ms()],
            )?;
            Ok(())
        })
    }

    /// Notes activity now (an API call, an attached stream, a running process); false when
    /// no live sandbox has this id.
    pub fn touch(&self, id: &str) -> Result<bool, DbError> {
        self.touch_at(id, now_ms())
    }

    /// Records a use at `at_ms` (never moving the time back); false if no such live sandbox.
    pub fn touch_at(&self, id: &str, at_ms: i64) -> Result<bool, DbError> {
        self.with(|c| {
            Ok(c.prepare_cached(
                "UPDATE sandboxes SET last_active_ms = MAX(last_active_ms, ?2) WHERE id = ?1 AND state != 'gone'",
            )?
            .execute(params![id, at_ms])?
                == 1)
        })
    }

    // --- named agents ---

    /// Makes the tenant's agent `name` known (once); true when it is new.
    pub fn add_agent(&self, tenant: &str, name: &str) -> Result<bool, DbError> {
        self.with(|c| {
            Ok(c.execute(
                "INSERT OR IGNORE INTO agents (tenant, name, created) VALUES (?1, ?2, ?3)",
                params![tenant, name, chrono::Utc::now().to_rfc3339()],
            )? == 1)
        })
    }

    fn agent_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<ServerAgent> {
        let record: Option<String> = r.get(3)?;
        Ok(ServerAgent {
            tenant: r.get(0)?,
            name: r.get(1)?,
            created: r.get(2)?,
            record: record.and_then(|text| serde_json::from_str(&text).ok()),
        })
    }

    pub fn agent(&self, tenant: &str, name: &str) -> Result<Option<ServerAgent>, DbError> {
        self.with(|c| {
            c.query_row(
                "SELECT tenant, name, created, record FROM agents WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
                Self::agent_row,
            )
            .optional()
        })
    }

    /// The agents of `tenant` (every tenant's when `None`), by name.
    pub fn agents(&self, tenant: Option<&str>) -> Result<Vec<ServerAgent>, DbError> {
        self.with(|c| {
            let mut s = c.prepare(
                "SELECT tenant, name, created, record FROM agents
                 WHERE ?1 IS NULL OR tenant = ?1 ORDER BY tenant, name",
            )?;
            let rows = s.query_map(params![tenant], Self::agent_row)?;
            rows.collect()
        })
    }

    /// Records a session of the agent (once), and which CLI it runs; one read-modify-write
    /// under the connection's lock, so two runs' sessions never overwrite each other.
    pub fn add_agent_session(
        &self,
        tenant: &str,
        name: &str,
        cli: berth_events::Cli,
        session: &str,
        forked_from: Option<&str>,
    ) -> Result<(), DbError> {
        self.with(|c| {
            let text: Option<Option<String>> = c
                .query_row(
                    "SELECT record FROM agents WHERE tenant = ?1 AND name = ?2",
                    params![tenant, name],
                    |r| r.get(0),
                )
                .optional()?;
            let mut record = text
                .flatten()
                .and_then(|t| serde_json::from_str::<AgentRecord>(&t).ok())
                .unwrap_or_else(|| AgentRecord::new(name, cli));
            if !session.is_empty() {
                record.add_session(session, forked_from);
            }
            let text = serde_json::to_string(&record)
                .map_err(|e| rusqlite::Error::ToSqlConversionFailure(Box::new(e)))?;
            c.execute(
                "INSERT INTO agents (tenant, name, created, record) VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (tenant, name) DO UPDATE SET record = excluded.record",
                params![tenant, name, chrono::Utc::now().to_rfc3339(), text],
            )?;
            Ok(())
        })
    }

    pub fn remove_agent(&self, tenant: &str, name: &str) -> Result<bool, DbError> {
        self.with(|c| {
            Ok(c.execute(
                "DELETE FROM agents WHERE tenant = ?1 AND name = ?2",
                params![tenant, name],
            )? == 1)
        })
    }

    // --- audit ---

    pub fn audit(
        &self,
        key: &str,
        action: &str,
        sandbox: Option<&str>,
        status: u16,
        outcome: &str,
    ) -> Result<(), DbError> {
        self.with(|c| {
            c.prepare_cached(
                "INSERT INTO audit (at, key_name, action, sandbox, status, outcome) VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?
            .execute(params![chrono::Utc::now().to_rfc3339(), key, action, sandbox, status, outcome])?;
            Ok(())
        })
    }

    /// Audit entries after `after` (an entry id), oldest first, at most `limit`.
    pub fn audit_entries(&self, after: i64, limit: i64) -> Result<Vec<AuditEntry>, DbError> {
        self.with(|c| {
            let mut s = c.prepare(
                "SELECT id, at, key_name, action, sandbox, status, outcome FROM audit WHERE id > ?1 ORDER BY id LIMIT ?2",
            )?;
            let rows = s.query_map(params![after, limit], |r| {
                Ok(AuditEntry {
                    id: r.get(0)?,
                    at: r.get(1)?,
                    key: r.get(2)?,
                    action: r.get(3)?,
                    sandbox: r.get(4)?,
                    status: r.get(5)?,
                    outcome: r.get(6)?,
                })
            })?;
            rows.collect()
        })
    }
}

fn store_err(e: DbError) -> SandboxError {
    SandboxError::io("the server database", std::io::Error::other(e.to_string()))
}

/// The service's records in SQLite. A sandbox's host directory is still a directory on the
/// host (its socket is mounted into the container).
impl Store for Db {
    fn sandbox_dir(&self, id: &str) -> PathBuf {
        self.state.join("sandboxes").join(id)
    }

    fn runtime_dir(&self) -> Option<PathBuf> {
        self.runtime.clone()
    }

    fn save(&self, record: &SandboxRecord) -> Result<(), SandboxError> {
        let json = serde_json::to_string(record).map_err(|e| {
            SandboxError::io("encoding the sandbox record", std::io::Error::other(e))
        })?;
        let tenant = record
            .labels
            .get(berth_spec::labels::TENANT)
            .cloned()
            .unwrap_or_default();
        self.with(|c| {
            c.execute(
                "INSERT INTO sandboxes (id, tenant, record, created, state, on_timeout, last_active_ms)
                 VALUES (?1, ?2, ?3, ?4, 'running', 'kill', ?5)
                 ON CONFLICT (id) DO UPDATE SET record = excluded.record",
                params![record.id, tenant, json, record.created, now_ms()],
            )?;
            Ok(())
        })
        .map_err(store_err)
    }

    fn records(&self) -> Vec<SandboxRecord> {
        self.with(|c| {
            let mut s =
                c.prepare("SELECT record FROM sandboxes WHERE state != 'gone' ORDER BY created")?;
            let rows = s.query_map([], |r| r.get::<_, String>(0))?;
            rows.collect::<rusqlite::Result<Vec<String>>>()
        })
        .unwrap_or_default()
        .into_iter()
        .filter_map(|json| serde_json::from_str(&json).ok())
        .collect()
    }

    fn get(&self, id: &str) -> Option<SandboxRecord> {
        let json: Option<String> = self
            .with(|c| {
                c.prepare_cached("SELECT record FROM sandboxes WHERE id = ?1 AND state != 'gone'")?
                    .query_row(params![id], |r| r.get(0))
                    .optional()
            })
            .ok()
            .flatten();
        json.and_then(|j| serde_json::from_str(&j).ok())
    }

    fn forget(&self, id: &str) -> bool {
        if !berth_sandbox::store::valid_id(id) {
            return false;
        }
        berth_sandbox::host_dirs::remove(self.runtime.as_deref(), id);
        let _ = std::fs::remove_dir_all(self.sandbox_dir(id));
        self.with(|c| {
            c.execute(
                "UPDATE sandboxes SET state = 'gone', reason = COALESCE(reason, 'removed') WHERE id = ?1 AND state != 'gone'",
                params![id],
            )
        })
        .is_ok_and(|n| n == 1)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A sandbox record of `tenant`'s, for tests of what the server keeps about it.
    pub(crate) fn record(id: &str, name: Option<&str>, tenant: &str) -> SandboxRecord {
        SandboxRecord {
            id: id.into(),
            name: name.map(str::to_string),
            container_id: "c".into(),
            container_name: format!("berth-{id}"),
            image: "berth/base".into(),
            token: "t".into(),
            run_dir: "/x".into(),
            user: "1000:1000".into(),
            workdir: "/".into(),
            created: "1".into(),
            labels: [(berth_spec::labels::TENANT.to_string(), tenant.to_string())].into(),
            egress: None,
            agent_copy: None,
        }
    }

    #[test]
    fn migrates_and_keeps_keys_and_clocks() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            Db::open(dir.path(), None, false),
            Err(DbError::Missing { .. })
        ));
        let db = Db::open(dir.path(), None, true).unwrap();
        let id = db.server_id().unwrap();
        assert_eq!(db.server_id().unwrap(), id, "made once");
        assert!(db.add_key("alice", "h1", false).unwrap());
        assert!(
            !db.add_key("alice", "h2", false).unwrap(),
            "names are unique"
        );
        assert_eq!(db.key_by_hash("h1").unwrap(), Some(("alice".into(), false)));
        assert!(migrations().validate().is_ok());

        let record = record("abc", None, "alice");
        db.save(&record).unwrap();
        db.set_deadline("abc", Some(10_000)).unwrap();
        db.pause_clock("abc", 1_000).unwrap();
        db.resume_clock("abc", 4_000).unwrap();
        let life = db.lifetime("abc").unwrap().unwrap();
        assert_eq!(life.deadline_ms, Some(13_000), "paused time does not count");
        assert_eq!(life.tenant, "alice");
        drop(db);
        let db = Db::open(dir.path(), None, false).unwrap();
        assert_eq!(db.records(), vec![record]);
        assert!(db.forget("abc"));
        assert!(db.records().is_empty());
        assert_eq!(db.lifetime("abc").unwrap().unwrap().state, "gone");
    }

    #[test]
    fn agents_are_per_tenant_and_keep_their_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(dir.path(), None, true).unwrap();
        assert!(db.add_agent("alice", "fixer").unwrap());
        assert!(!db.add_agent("alice", "fixer").unwrap(), "made once");
        assert!(
            db.add_agent("bob", "fixer").unwrap(),
            "names are per tenant"
        );
        assert_eq!(db.agent("alice", "fixer").unwrap().unwrap().record, None);
        let cli = berth_events::Cli::Claude;
        db.add_agent_session("alice", "fixer", cli, "s1", None)
            .unwrap();
        db.add_agent_session("alice", "fixer", cli, "s1", None)
            .unwrap();
        db.add_agent_session("alice", "fixer", cli, "s2", Some("s1"))
            .unwrap();
        let record = db.agent("alice", "fixer").unwrap().unwrap().record.unwrap();
        assert_eq!(record.sessions.len(), 2, "each session once");
        assert_eq!(record.sessions[1].forked_from.as_deref(), Some("s1"));
        assert_eq!(db.agent("bob", "fixer").unwrap().unwrap().record, None);
        assert_eq!(db.agents(Some("alice")).unwrap().len(), 1);
        assert_eq!(db.agents(None).unwrap().len(), 2);
        assert!(db.remove_agent("alice", "fixer").unwrap());
        assert!(db.agent("alice", "fixer").unwrap().is_none());
        assert!(db.agent("bob", "fixer").unwrap().is_some());
    }
}

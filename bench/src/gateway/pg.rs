//! The benchmark's PostgreSQL: a private, throwaway cluster with production durability
//! (`fsync` and `synchronous_commit` on, as PostgreSQL ships) and `pg_stat_statements`
//! loaded to count round trips — or an existing server from `BENCH_DATABASE_URL`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tokio_postgres::{Client, NoTls};

use super::procs;

pub struct Postgres {
    /// URL of the maintenance database `postgres`.
    pub admin_url: String,
    /// The private cluster, stopped and removed on drop.
    cluster: Option<Cluster>,
}

struct Cluster {
    bin: PathBuf,
    dir: PathBuf,
    as_postgres: bool,
}

fn pg_bin_dir() -> PathBuf {
    if let Ok(dir) = std::env::var("SWITCHBOARD_PG_BIN_DIR") {
        return PathBuf::from(dir);
    }
    let mut dirs: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|entries| {
            entries
                .filter_map(|e| Some(e.ok()?.path().join("bin")))
                .filter(|p| p.join("initdb").exists())
                .collect()
        })
        .unwrap_or_default();
    dirs.sort();
    dirs.pop().expect(
        "PostgreSQL server binaries under /usr/lib/postgresql/*/bin (or SWITCHBOARD_PG_BIN_DIR)",
    )
}

fn run(as_postgres: bool, program: &Path, args: &[&str]) {
    let status = if as_postgres {
        Command::new("runuser")
            .args(["-u", "postgres", "--"])
            .arg(program)
            .args(args)
            .current_dir("/")
            .status()
    } else {
        Command::new(program).args(args).current_dir("/").status()
    }
    .unwrap_or_else(|e| panic!("run {}: {e}", program.display()));
    assert!(status.success(), "{} {:?} failed", program.display(), args);
}

impl Postgres {
    /// `BENCH_DATABASE_URL` (a maintenance database URL) if set, else a new private cluster
    /// under `root`.
    pub fn start(root: &Path) -> Postgres {
        if let Ok(url) = std::env::var("BENCH_DATABASE_URL") {
            return Postgres {
                admin_url: url,
                cluster: None,
            };
        }
        let bin = pg_bin_dir();
        let dir = root.join(format!("pg-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // PostgreSQL refuses to run as root.
        let as_postgres = procs::uid() == 0;
        if as_postgres {
            let _ = Command::new("chmod").arg("755").arg(root).status();
            let ok = Command::new("chown")
                .args(["-R", "postgres:postgres"])
                .arg(&dir)
                .status()
                .map(|s| s.success())
                .unwrap_or(false);
            assert!(ok, "chown the cluster directory to postgres");
        }
        let data = dir.join("data");
        let data_s = data.to_string_lossy().to_string();
        run(
            as_postgres,
            &bin.join("initdb"),
            &[
                "-D",
                &data_s,
                "-U",
                "postgres",
                "--auth=trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ],
        );
        let port = procs::free_port();
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {port} -c unix_socket_directories='' \
             -c max_connections=300 -c shared_buffers=256MB \
             -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=top \
             -c track_functions=pl"
        );
        let log = dir.join("server.log").to_string_lossy().to_string();
        run(
            as_postgres,
            &bin.join("pg_ctl"),
            &[
                "-D", &data_s, "-l", &log, "-w", "-t", "60", "-o", &options, "start",
            ],
        );
        Postgres {
            admin_url: format!("postgres://postgres@127.0.0.1:{port}/postgres"),
            cluster: Some(Cluster {
                bin,
                dir,
                as_postgres,
            }),
        }
    }

    pub fn url_of(&self, database: &str) -> String {
        switchboard_tests::test_db::with_database(&self.admin_url, database)
    }

    /// The postmaster's pid (private cluster only), for CPU accounting.
    pub fn postmaster_pid(&self) -> Option<u32> {
        let cluster = self.cluster.as_ref()?;
        std::fs::read_to_string(cluster.dir.join("data/postmaster.pid"))
            .ok()?
            .lines()
            .next()?
            .trim()
            .parse()
            .ok()
    }

    pub fn is_private(&self) -> bool {
        self.cluster.is_some()
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        if let Some(cluster) = &self.cluster {
            let data = cluster.dir.join("data").to_string_lossy().to_string();
            let pg_ctl = cluster.bin.join("pg_ctl");
            let args = ["-D", data.as_str(), "-m", "immediate", "-w", "stop"];
            let _ = if cluster.as_postgres {
                Command::new("runuser")
                    .args(["-u", "postgres", "--"])
                    .arg(&pg_ctl)
                    .args(args)
                    .current_dir("/")
                    .output()
            } else {
                Command::new(&pg_ctl).args(args).current_dir("/").output()
            };
            let _ = std::fs::remove_dir_all(&cluster.dir);
        }
    }
}

pub async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(connection);
    client
}

/// Statement counts of one database, from `pg_stat_statements` (top-level statements:
/// a call of `sb_admit` is one, whatever it runs inside).
pub struct StatementStats {
    pub total_calls: i64,
    /// (calls, mean server-side execution ms, query) by calls, descending.
    pub by_query: Vec<(i64, f64, String)>,
    pub xact_commit: i64,
}

pub async fn reset_stats(admin: &Client) {
    let _ = admin
        .batch_execute("SELECT pg_stat_statements_reset()")
        .await;
}

pub async fn statement_stats(admin: &Client, database: &str) -> StatementStats {
    let rows = admin
        .query(
            "SELECT s.calls, s.mean_exec_time, s.query FROM pg_stat_statements s
             JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = $1 ORDER BY s.calls DESC",
            &[&database],
        )
        .await;
    let by_query: Vec<(i64, f64, String)> = match rows {
        Ok(rows) => rows
            .iter()
            .map(|r| {
                let q: String = r.get(2);
                (
                    r.get::<_, i64>(0),
                    r.get::<_, f64>(1),
                    q.split_whitespace().collect::<Vec<_>>().join(" "),
                )
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let xact_commit = admin
        .query_one(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = $1",
            &[&database],
        )
        .await
        .map(|r| r.get::<_, i64>(0))
        .unwrap_or(0);
    StatementStats {
        total_calls: by_query.iter().map(|(c, _, _)| c).sum(),
        by_query,
        xact_commit,
    }
}

/// Calls of the ledger's server-side functions (`track_functions = pl`), read in the bench
/// database itself.
pub async fn function_calls(bench: &Client) -> Vec<(String, i64)> {
    bench
        .query(
            "SELECT funcname::text, calls FROM pg_stat_user_functions ORDER BY calls DESC",
            &[],
        )
        .await
        .map(|rows| rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        .unwrap_or_default()
}

/// Cumulative statistics are flushed by backends about once a second.
pub async fn settle_stats() {
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

pub async fn settings(admin: &Client) -> String {
    let mut out = Vec::new();
    for name in [
        "server_version",
        "fsync",
        "synchronous_commit",
        "shared_buffers",
        "max_connections",
    ] {
        if let Ok(row) = admin.query_one(&format!("SHOW {name}"), &[]).await {
            out.push(format!("{name}={}", row.get::<_, String>(0)));
        }
    }
    out.join(", ")
}

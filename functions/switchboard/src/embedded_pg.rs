//! The embedded default database of `switchboard serve`: a private PostgreSQL cluster under
//! `<data dir>/pg`, created with `initdb` on first start, started with `pg_ctl`, reused on
//! later starts, and stopped when Switchboard stops. Root cannot run PostgreSQL, so as root
//! the cluster belongs to the `postgres` user and every command runs through `runuser`.

use std::net::TcpListener;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The database Switchboard uses inside its private cluster.
pub const DATABASE_NAME: &str = "switchboard";
const SUPERUSER: &str = "postgres";
const SEARCH_DIRS: &str = "/usr/lib/postgresql";

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or under /usr/lib/postgresql/*/bin: \
         install them (Debian/Ubuntu: apt-get install postgresql) or set DATABASE_URL to an existing database"
    )]
    BinariesMissing,
    #[error("SWITCHBOARD_PG_BIN_DIR={0} does not contain initdb and pg_ctl")]
    BinDirInvalid(String),
    #[error(
        "running as root, but there is no `postgres` user to own the embedded cluster: create one or set DATABASE_URL"
    )]
    NoPostgresUser,
    #[error(
        "the postgres user cannot reach {0} (a parent directory is not enterable): \
         set SWITCHBOARD_DATA_DIR to a directory it can enter, such as /var/lib/switchboard"
    )]
    Unreachable(String),
    #[error(
        "the cluster in {dir} was made by PostgreSQL {found}, but the binaries found are version {have}"
    )]
    VersionMismatch {
        dir: String,
        found: String,
        have: String,
    },
    #[error("{command} failed: {detail}")]
    Command { command: String, detail: String },
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// A running private cluster. Call [`EmbeddedPostgres::stop`] on shutdown; dropping it
/// stops the cluster too, as a last resort.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    bin_dir: PathBuf,
    data_dir: PathBuf,
    log_file: PathBuf,
    port: u16,
    run_as: Option<String>,
    running: bool,
}

impl EmbeddedPostgres {
    /// Initialises (first time) and starts the cluster under `root/pg`, and makes sure the
    /// `switchboard` database exists.
    pub async fn start(
        root: &Path,
        bin_dir_override: Option<&Path>,
    ) -> Result<Self, EmbeddedError> {
        let bin_dir = find_bin_dir(bin_dir_override)?;
        let run_as = if running_as_root()? {
            Some(SUPERUSER.to_string())
        } else {
            None
        };
        let pg_root = absolute(&root.join("pg"))?;
        let data_dir = pg_root.join("data");
        let log_file = pg_root.join("server.log");
        std::fs::create_dir_all(&pg_root)?;
        if let Some(user) = &run_as {
            let (uid, gid) = lookup_user(user)?.ok_or(EmbeddedError::NoPostgresUser)?;
            std::os::unix::fs::chown(&pg_root, Some(uid), Some(gid))?;
            if data_dir.exists() {
                std::os::unix::fs::chown(&data_dir, Some(uid), Some(gid))?;
            }
            let probe = run(as_user(
                Some(user),
                "test",
                &["-w".as_ref(), pg_root.as_os_str()],
            ))?;
            if !probe.status.success() {
                return Err(EmbeddedError::Unreachable(pg_root.display().to_string()));
            }
        }

        let mut cluster = Self {
            bin_dir,
            data_dir,
            log_file,
            port: 0,
            run_as,
            running: false,
        };
        cluster.init_if_needed()?;
        cluster.start_server()?;
        cluster.create_database().await?;
        Ok(cluster)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The URL of the `switchboard` database (trust auth, loopback only).
    pub fn database_url(&self) -> String {
        format!(
            "postgres://{SUPERUSER}@127.0.0.1:{}/{DATABASE_NAME}",
            self.port
        )
    }

    fn tool(&self, name: &str) -> String {
        self.bin_dir.join(name).display().to_string()
    }

    fn pg_ctl(&self, args: &[&std::ffi::OsStr]) -> Result<Output, EmbeddedError> {
        run(as_user(self.run_as.as_deref(), &self.tool("pg_ctl"), args))
    }

    fn init_if_needed(&self) -> Result<(), EmbeddedError> {
        let version_file = self.data_dir.join("PG_VERSION");
        let have = binaries_version(&self.bin_dir)?;
        if let Ok(found) = std::fs::read_to_string(&version_file) {
            let found = found.trim().to_string();
            if found != have {
                return Err(EmbeddedError::VersionMismatch {
                    dir: self.data_dir.display().to_string(),
                    found,
                    have,
                });
            }
            return Ok(());
        }
        tracing::info!(dir = %self.data_dir.display(), "creating the embedded PostgreSQL cluster (first start)");
        let output = run(as_user(
            self.run_as.as_deref(),
            &self.tool("initdb"),
            &[
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-U".as_ref(),
                SUPERUSER.as_ref(),
                "--auth=trust".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-instructions".as_ref(),
            ],
        ))?;
        check(output, "initdb")
    }

    fn start_server(&mut self) -> Result<(), EmbeddedError> {
        // A cluster left running (for instance by a killed Switchboard) is reused as is.
        if let Some(port) = self.running_port() {
            tracing::info!(
                port,
                "reusing the embedded PostgreSQL cluster that is already running"
            );
            self.port = port;
            self.running = true;
            return Ok(());
        }
        // A first start picks a free port; a restart keeps its port (clients reconnect).
        if self.port == 0 {
            self.port = free_port()?;
        }
        let options = format!(
            "-c listen_addresses=127.0.0.1 -p {} -c unix_socket_directories='' -c max_connections=100",
            self.port
        );
        let output = self.pg_ctl(&[
            "start".as_ref(),
            "-D".as_ref(),
            self.data_dir.as_os_str(),
            "-l".as_ref(),
            self.log_file.as_os_str(),
            "-w".as_ref(),
            "-t".as_ref(),
            "60".as_ref(),
            "-o".as_ref(),
            options.as_ref(),
        ])?;
        if !output.status.success() {
            let tail = std::fs::read_to_string(&self.log_file)
                .map(|log| {
                    log.lines()
                        .rev()
                        .take(5)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join(" | ")
                })
                .unwrap_or_default();
            return Err(EmbeddedError::Command {
                command: "pg_ctl start".into(),
                detail: format!("{} (log: {tail})", summarize(&output)),
            });
        }
        self.running = true;
        tracing::info!(port = self.port, dir = %self.data_dir.display(), "embedded PostgreSQL started");
        Ok(())
    }

    /// The port of a server already running on this data directory, if any.
    fn running_port(&self) -> Option<u16> {
        let status = self
            .pg_ctl(&["status".as_ref(), "-D".as_ref(), self.data_dir.as_os_str()])
            .ok()?;
        if !status.status.success() {
            return None;
        }
        // postmaster.pid: line 4 is the port.
        let pid_file = std::fs::read_to_string(self.data_dir.join("postmaster.pid")).ok()?;
        pid_file.lines().nth(3)?.trim().parse().ok()
    }

    async fn create_database(&self) -> Result<(), EmbeddedError> {
        let url = format!("postgres://{SUPERUSER}@127.0.0.1:{}/postgres", self.port);
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .map_err(|e| EmbeddedError::Command {
                command: "connect".into(),
                detail: e.to_string(),
            })?;
        let connection = tokio::spawn(connection);
        let sql_error = |e: tokio_postgres::Error| EmbeddedError::Command {
            command: "create database".into(),
            detail: e.to_string(),
        };
        let exists = client
            .query_opt(
                "SELECT 1 FROM pg_database WHERE datname = $1",
                &[&DATABASE_NAME],
            )
            .await
            .map_err(sql_error)?
            .is_some();
        if !exists {
            client
                .batch_execute(&format!("CREATE DATABASE {DATABASE_NAME}"))
                .await
                .map_err(sql_error)?;
        }
        drop(client);
        let _ = connection.await;
        Ok(())
    }

    /// Starts a stopped cluster again, on the port it had (the outage tests' way back).
    pub fn resume(&mut self) -> Result<(), EmbeddedError> {
        if self.running {
            return Ok(());
        }
        self.start_server()
    }

    /// Stops the cluster (fast shutdown: open sessions are ended, data is flushed).
    pub fn stop(&mut self) -> Result<(), EmbeddedError> {
        if !self.running {
            return Ok(());
        }
        self.running = false;
        let output = self.pg_ctl(&[
            "stop".as_ref(),
            "-D".as_ref(),
            self.data_dir.as_os_str(),
            "-m".as_ref(),
            "fast".as_ref(),
            "-w".as_ref(),
        ])?;
        // Already stopped (for instance by the terminal's Ctrl-C reaching it) is fine.
        if !output.status.success() && self.running_port().is_some() {
            return Err(EmbeddedError::Command {
                command: "pg_ctl stop".into(),
                detail: summarize(&output),
            });
        }
        tracing::info!("embedded PostgreSQL stopped");
        Ok(())
    }
}

impl Drop for EmbeddedPostgres {
    fn drop(&mut self) {
        if let Err(error) = self.stop() {
            tracing::error!(%error, "could not stop the embedded PostgreSQL cluster");
        }
    }
}

/// Finds the directory with `initdb` and `pg_ctl`: the override, else PATH, else the
/// newest `/usr/lib/postgresql/<version>/bin`.
pub fn find_bin_dir(override_dir: Option<&Path>) -> Result<PathBuf, EmbeddedError> {
    find_bin_dir_in(
        override_dir,
        std::env::var_os("PATH"),
        Path::new(SEARCH_DIRS),
    )
}

fn find_bin_dir_in(
    override_dir: Option<&Path>,
    path_var: Option<std::ffi::OsString>,
    search_root: &Path,
) -> Result<PathBuf, EmbeddedError> {
    let has_tools = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = override_dir {
        return if has_tools(dir) {
            Ok(dir.to_path_buf())
        } else {
            Err(EmbeddedError::BinDirInvalid(dir.display().to_string()))
        };
    }
    for dir in path_var.iter().flat_map(std::env::split_paths) {
        if has_tools(&dir) {
            // Debian links these into PATH; resolve so `postgres` is found beside pg_ctl.
            let resolved = std::fs::canonicalize(dir.join("pg_ctl"))
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf));
            return Ok(resolved.filter(|d| has_tools(d)).unwrap_or(dir));
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(search_root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            has_tools(&bin).then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions
        .pop()
        .map(|(_, dir)| dir)
        .ok_or(EmbeddedError::BinariesMissing)
}

/// The major version of the binaries (`pg_ctl --version` → "15").
fn binaries_version(bin_dir: &Path) -> Result<String, EmbeddedError> {
    let output = run(as_user(
        None,
        &bin_dir.join("pg_ctl").display().to_string(),
        &["--version".as_ref()],
    ))?;
    let text = String::from_utf8_lossy(&output.stdout);
    // "pg_ctl (PostgreSQL) 15.20 (Debian ...)" → "15"
    text.split_whitespace()
        .nth(2)
        .and_then(|v| v.split('.').next())
        .map(str::to_string)
        .ok_or_else(|| EmbeddedError::Command {
            command: "pg_ctl --version".into(),
            detail: text.trim().to_string(),
        })
}

fn running_as_root() -> Result<bool, EmbeddedError> {
    // The owner of /proc/self is the process's effective uid.
    Ok(std::fs::metadata("/proc/self")?.uid() == 0)
}

fn lookup_user(name: &str) -> Result<Option<(u32, u32)>, EmbeddedError> {
    let passwd = std::fs::read_to_string("/etc/passwd")?;
    Ok(passwd.lines().find_map(|line| {
        let fields: Vec<&str> = line.split(':').collect();
        (fields.len() > 3 && fields[0] == name)
            .then(|| Some((fields[2].parse().ok()?, fields[3].parse().ok()?)))?
    }))
}

fn absolute(path: &Path) -> Result<PathBuf, EmbeddedError> {
    Ok(if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()?.join(path)
    })
}

fn free_port() -> Result<u16, EmbeddedError> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn as_user(user: Option<&str>, program: &str, args: &[&std::ffi::OsStr]) -> Command {
    let mut command = match user {
        Some(user) => {
            let mut c = Command::new("runuser");
            c.args(["-u", user, "--", program]);
            c
        }
        None => Command::new(program),
    };
    command.args(args);
    // The server must not inherit our stdin; paths are absolute, and `/` is a working
    // directory the postgres user can always enter.
    command.stdin(std::process::Stdio::null()).current_dir("/");
    command
}

fn run(mut command: Command) -> Result<Output, EmbeddedError> {
    Ok(command.output()?)
}

fn check(output: Output, what: &str) -> Result<(), EmbeddedError> {
    if output.status.success() {
        Ok(())
    } else {
        Err(EmbeddedError::Command {
            command: what.into(),
            detail: summarize(&output),
        })
    }
}

fn summarize(output: &Output) -> String {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let text = if stderr.trim().is_empty() {
        stdout
    } else {
        stderr
    };
    format!("{} ({})", text.trim(), output.status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("sb-pgbin-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn fake_tools(dir: &Path) {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("initdb"), "").unwrap();
        std::fs::write(dir.join("pg_ctl"), "").unwrap();
    }

    #[test]
    fn missing_binaries_name_the_fix() {
        let empty = temp_dir("empty");
        let err = find_bin_dir_in(
            None,
            Some(empty.clone().into_os_string()),
            &empty.join("nope"),
        )
        .unwrap_err();
        assert!(matches!(err, EmbeddedError::BinariesMissing));
        let message = err.to_string();
        assert!(
            message.contains("apt-get install postgresql") && message.contains("DATABASE_URL"),
            "{message}"
        );
        assert!(!message.contains('\n'), "one line");
        let err = find_bin_dir_in(Some(&empty), None, &empty).unwrap_err();
        assert!(matches!(err, EmbeddedError::BinDirInvalid(_)));
    }

    #[test]
    fn newest_version_under_the_search_root_wins() {
        let root = temp_dir("search");
        fake_tools(&root.join("9").join("bin"));
        fake_tools(&root.join("15").join("bin"));
        fake_tools(&root.join("13").join("bin"));
        let found = find_bin_dir_in(None, None, &root).unwrap();
        assert_eq!(found, root.join("15").join("bin"));
    }

    #[test]
    fn path_comes_before_the_search_root() {
        let root = temp_dir("path");
        fake_tools(&root.join("onpath"));
        fake_tools(&root.join("lib").join("15").join("bin"));
        let found = find_bin_dir_in(
            None,
            Some(root.join("onpath").into_os_string()),
            &root.join("lib"),
        )
        .unwrap();
        assert_eq!(found, root.join("onpath"));
    }

    #[test]
    fn passwd_lookup_finds_root() {
        assert_eq!(lookup_user("root").unwrap(), Some((0, 0)));
        assert_eq!(lookup_user("no-such-user-here").unwrap(), None);
    }
}

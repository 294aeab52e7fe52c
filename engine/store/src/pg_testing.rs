//! A throwaway PostgreSQL server for tests: the store's own test suite and
//! the end-to-end tests start one with [`PgServer::start`] and get a fresh
//! database per test from [`PgServer::create_database`].
//!
//! This module owns finding the server binaries (env `NEUTRAL_PG_BIN`, else
//! the newest `/usr/lib/postgresql/<version>/bin` holding `initdb`),
//! `initdb` (once, into a template folder each server copies) into a
//! temporary folder, starting `postgres` on a free
//! loopback port (as the `postgres` user when run as root, since `initdb`
//! refuses root), and stopping it. The server runs under a small shell that
//! waits on a pipe from this process: when the [`PgServer`] is dropped, or
//! the test process exits without dropping it (a `static`), the pipe closes
//! and the shell stops the server and removes its folder. It is test
//! support, not used by the daemon: it must never be called with a real
//! database, nor listen beyond loopback except on a network the test
//! created itself ([`PgServer::start_also_on`]: a test bed's Docker bridge).
//! Every wait is bounded.

use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long `initdb` plus the first accepted connection may take.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running test server. Dropping it stops the server (bounded) and
/// removes its folder.
pub struct PgServer {
    port: u16,
    dir: PathBuf,
    child: Mutex<Child>,
    stdin: Mutex<Option<ChildStdin>>,
    next_db: AtomicU64,
}

impl std::fmt::Debug for PgServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgServer")
            .field("port", &self.port)
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

/// Why no server could be started.
#[derive(Debug)]
pub enum StartError {
    /// PostgreSQL is not installed here (the reason says what was looked
    /// for): a test may skip, unless env `CI` is set.
    Missing(String),
    /// It is installed but did not start.
    Failed(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Missing(reason) => write!(f, "PostgreSQL is not installed: {reason}"),
            StartError::Failed(reason) => write!(f, "PostgreSQL did not start: {reason}"),
        }
    }
}

/// The folder holding `initdb`, `postgres` and `pg_ctl`.
pub fn find_bin_dir() -> Result<PathBuf, StartError> {
    if let Some(dir) = std::env::var_os("NEUTRAL_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if dir.join("initdb").is_file() {
            Ok(dir)
        } else {
            Err(StartError::Missing(format!(
                "NEUTRAL_PG_BIN={} holds no initdb",
                dir.display()
            )))
        };
    }
    let root = Path::new("/usr/lib/postgresql");
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir(root)
        .map_err(|err| {
            StartError::Missing(format!(
                "{}: {err} (Debian package `postgresql`; or set NEUTRAL_PG_BIN)",
                root.display()
            ))
        })?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").is_file().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        StartError::Missing(format!(
            "no {}/<version>/bin/initdb (Debian package `postgresql`; or set NEUTRAL_PG_BIN)",
            root.display()
        ))
    })
}

/// Starts a server, or says why not. When PostgreSQL is missing and env `CI`
/// is not set, prints the reason and returns `None` so the caller can skip;
/// under `CI` a missing PostgreSQL is a failure.
pub fn start_or_skip() -> Option<PgServer> {
    match PgServer::start() {
        Ok(server) => Some(server),
        Err(StartError::Missing(reason)) if std::env::var_os("CI").is_none() => {
            eprintln!("SKIPPED: PostgreSQL tests need PostgreSQL: {reason}");
            None
        }
        Err(err) => fail_test(&err.to_string()),
    }
}

#[allow(clippy::panic)]
fn fail_test(message: &str) -> ! {
    // Test support only: a test that needs PostgreSQL fails here.
    panic!("{message}")
}

impl PgServer {
    /// `initdb` into a new temporary folder and start `postgres` on a free
    /// loopback port; returns once it accepts connections.
    pub fn start() -> Result<PgServer, StartError> {
        Self::start_with(None, None)
    }

    /// [`PgServer::start`], listening also on `address` (the test's own
    /// address on a network it created) and trusting clients from `clients`
    /// (that network, e.g. `198.18.7.0/24`) — for hosts of a test bed.
    pub fn start_also_on(address: std::net::IpAddr, clients: &str) -> Result<PgServer, StartError> {
        Self::start_with(Some((address, clients)), None)
    }

    /// [`PgServer::start`] with TLS on, presenting `cert_pem` (key
    /// `key_pem`): every database but `postgres` (which [`PgServer::admin`]
    /// reaches in plain text) takes TLS connections only.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Result<PgServer, StartError> {
        Self::start_with(None, Some((cert_pem, key_pem)))
    }

    fn start_with(
        also: Option<(std::net::IpAddr, &str)>,
        tls: Option<(&str, &str)>,
    ) -> Result<PgServer, StartError> {
        let bin = find_bin_dir()?;
        let failed = StartError::Failed;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "neutral-pg-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|err| failed(format!("create {}: {err}", dir.display())))?;
        let as_user = run_as_user()?;
        if let Some((_, uid, gid)) = &as_user {
            std::os::unix::fs::chown(&dir, Some(*uid), Some(*gid))
                .map_err(|err| failed(format!("chown {}: {err}", dir.display())))?;
        }
        let data = dir.join("data");
        let template = template(&bin, &as_user)?;
        let mut copy = command(&as_user, Path::new("cp"));
        copy.arg("-a")
            .arg(&template)
            .arg(&data)
            .stdin(Stdio::null());
        let output = run_bounded(copy, START_TIMEOUT)
            .map_err(|err| failed(format!("copy the initdb template: {err}")))?;
        if !output.0 {
            return Err(failed(format!("copy the initdb template: {}", output.1)));
        }
        let port = free_port().map_err(|err| failed(format!("find a free port: {err}")))?;
        let mut listen = "127.0.0.1".to_owned();
        let mut hba = "local all all trust\nhost all all 127.0.0.1/32 trust\n".to_owned();
        if let Some((address, clients)) = also {
            listen.push_str(&format!(",{address}"));
            hba.push_str(&format!("host all all {clients} trust\n"));
        }
        if let Some((cert, key)) = tls {
            hba = "local all all trust\nhostnossl postgres all 127.0.0.1/32 trust\n\
                   hostssl all all 127.0.0.1/32 trust\n"
                .to_owned();
            let owned = |name: &str, text: &str| -> Result<PathBuf, StartError> {
                let path = dir.join(name);
                std::fs::write(&path, text)
                    .map_err(|err| failed(format!("write {}: {err}", path.display())))?;
                std::fs::set_permissions(
                    &path,
                    std::os::unix::fs::PermissionsExt::from_mode(0o600),
                )
                .map_err(|err| failed(format!("chmod {}: {err}", path.display())))?;
                if let Some((_, uid, gid)) = &as_user {
                    std::os::unix::fs::chown(&path, Some(*uid), Some(*gid))
                        .map_err(|err| failed(format!("chown {}: {err}", path.display())))?;
                }
                Ok(path)
            };
            let cert = owned("server.crt", cert)?;
            let key = owned("server.key", key)?;
            let conf = data.join("postgresql.conf");
            let mut text = std::fs::read_to_string(&conf)
                .map_err(|err| failed(format!("read {}: {err}", conf.display())))?;
            text.push_str(&format!(
                "\nssl = on\nssl_cert_file = '{}'\nssl_key_file = '{}'\n",
                cert.display(),
                key.display()
            ));
            std::fs::write(&conf, text)
                .map_err(|err| failed(format!("write {}: {err}", conf.display())))?;
        }
        let hba_file = dir.join("pg_hba.conf");
        std::fs::write(&hba_file, hba)
            .map_err(|err| failed(format!("write {}: {err}", hba_file.display())))?;
        // The shell stops the server and removes the folder when our end
        // of its stdin closes (drop, or this process exiting).
        let script = r#"
"$1/postgres" -D "$2/data" -k "$2" -p "$3" -c listen_addresses="$4" \
    -c hba_file="$2/pg_hba.conf" -c fsync=off -c synchronous_commit=off -c full_page_writes=off \
    -c max_connections=200 >"$2/log" 2>&1 &
pid=$!
read -r _unused || true
kill -INT "$pid" 2>/dev/null
wait "$pid"
rm -rf "$2"
"#;
        let mut shell = command(&as_user, Path::new("/bin/sh"));
        shell
            .args(["-c", script, "pg-test-server"])
            .arg(&bin)
            .arg(&dir)
            .arg(port.to_string())
            .arg(&listen)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = shell
            .spawn()
            .map_err(|err| failed(format!("start postgres: {err}")))?;
        let stdin = child.stdin.take();
        let server = PgServer {
            port,
            dir,
            child: Mutex::new(child),
            stdin: Mutex::new(stdin),
            next_db: AtomicU64::new(0),
        };
        server.wait_ready()?;
        Ok(server)
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` on this server.
    pub fn url(&self, name: &str) -> String {
        format!("postgres://neutral@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates a new empty database `t_<n>` and returns its URL.
    pub fn create_database(&self) -> Result<String, String> {
        let n = self.next_db.fetch_add(1, Ordering::Relaxed);
        let name = format!("t_{n}");
        let mut client = self.admin()?;
        client
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|err| format!("CREATE DATABASE {name}: {}", crate::db::pg_message(&err)))?;
        Ok(self.url(&name))
    }

    /// A client of the `postgres` maintenance database.
    pub fn admin(&self) -> Result<postgres::Client, String> {
        let mut config: postgres::Config = self
            .url("postgres")
            .parse()
            .map_err(|err: postgres::Error| err.to_string())?;
        config.connect_timeout(Duration::from_secs(5));
        config
            .connect(postgres::NoTls)
            .map_err(|err| crate::db::pg_message(&err))
    }

    /// The server's log so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    fn wait_ready(&self) -> Result<(), StartError> {
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if self.admin().is_ok() {
                return Ok(());
            }
            let exited = self
                .child
                .lock()
                .map(|mut child| child.try_wait().ok().flatten().is_some())
                .unwrap_or(true);
            if exited || Instant::now() > deadline {
                return Err(StartError::Failed(format!(
                    "no connection on 127.0.0.1:{} ({}); log: {}",
                    self.port,
                    if exited { "it exited" } else { "timed out" },
                    self.log()
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        if let Ok(mut stdin) = self.stdin.lock()
            && let Some(mut pipe) = stdin.take()
        {
            let _ = pipe.write_all(b"stop\n");
        }
        if let Ok(mut child) = self.child.lock() {
            let deadline = Instant::now() + Duration::from_secs(20);
            while Instant::now() < deadline {
                if child.try_wait().ok().flatten().is_some() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A data folder made by `initdb` once per machine and PostgreSQL build
/// (`<temp>/neutral-pg-template-<hash of the bin folder>/data`), copied
/// for each server: `initdb` takes seconds, a copy a fraction of one, and
/// nextest runs each test in a process of its own. Made under a file lock;
/// a template without its `ready` marker is made again.
fn template(bin: &Path, as_user: &Option<(String, u32, u32)>) -> Result<PathBuf, StartError> {
    let failed = StartError::Failed;
    let key = bin
        .to_string_lossy()
        .bytes()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(byte)).wrapping_mul(0x0000_0100_0000_01b3)
        });
    let root = std::env::temp_dir().join(format!("neutral-pg-template-{key:016x}"));
    let lock_path = root.with_extension("lock");
    let lock = std::fs::File::create(&lock_path)
        .map_err(|err| failed(format!("create {}: {err}", lock_path.display())))?;
    lock.lock()
        .map_err(|err| failed(format!("lock {}: {err}", lock_path.display())))?;
    let data = root.join("data");
    if root.join("ready").is_file() && data.join("PG_VERSION").is_file() {
        return Ok(data);
    }
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root)
        .map_err(|err| failed(format!("create {}: {err}", root.display())))?;
    if let Some((_, uid, gid)) = as_user {
        std::os::unix::fs::chown(&root, Some(*uid), Some(*gid))
            .map_err(|err| failed(format!("chown {}: {err}", root.display())))?;
    }
    let mut initdb = command(as_user, &bin.join("initdb"));
    initdb
        .arg("-D")
        .arg(&data)
        .args(["-A", "trust", "-U", "neutral", "-E", "UTF8", "--locale=C"])
        .args(["--no-sync", "--no-instructions"])
        .stdin(Stdio::null());
    let output =
        run_bounded(initdb, START_TIMEOUT).map_err(|err| failed(format!("initdb: {err}")))?;
    if !output.0 {
        return Err(failed(format!("initdb failed: {}", output.1)));
    }
    std::fs::write(root.join("ready"), b"")
        .map_err(|err| failed(format!("mark {} ready: {err}", root.display())))?;
    Ok(data)
}

/// `Some((name, uid, gid))` of the user to run PostgreSQL as when this
/// process is root (initdb refuses root), `None` otherwise.
fn run_as_user() -> Result<Option<(String, u32, u32)>, StartError> {
    let uid = id_of(&["-u"], None)?;
    if uid != 0 {
        return Ok(None);
    }
    let user = "postgres";
    let user_uid = id_of(&["-u"], Some(user))?;
    let user_gid = id_of(&["-g"], Some(user))?;
    Ok(Some((user.to_owned(), user_uid, user_gid)))
}

fn id_of(flags: &[&str], user: Option<&str>) -> Result<u32, StartError> {
    let mut id = Command::new("id");
    id.args(flags).args(user);
    let output = id
        .output()
        .map_err(|err| StartError::Failed(format!("run id: {err}")))?;
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            StartError::Missing(format!(
                "running as root needs a `{}` user to run PostgreSQL as (id: {})",
                user.unwrap_or("?"),
                String::from_utf8_lossy(&output.stderr).trim()
            ))
        })
}

fn command(as_user: &Option<(String, u32, u32)>, program: &Path) -> Command {
    match as_user {
        Some((user, _, _)) => {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", user, "--"]).arg(program);
            cmd
        }
        None => Command::new(program),
    }
}

/// Runs `cmd` to its end within `timeout`: (succeeded, its output).
fn run_bounded(mut cmd: Command, timeout: Duration) -> Result<(bool, String), String> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|err| err.to_string())?;
    let deadline = Instant::now() + timeout;
    loop {
        if child.try_wait().map_err(|err| err.to_string())?.is_some() {
            let output = child.wait_with_output().map_err(|err| err.to_string())?;
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
            return Ok((output.status.success(), text));
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("did not finish within {timeout:?}"));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

//! The node's own nginx: one instance with its own prefix folder, listening on
//! the node's service address and proxying to the active colour.
//!
//! It owns the files under the prefix (`nginx.conf`, `upstream.conf`, logs,
//! temp folders) and the master process found through the pid file. A switch
//! rewrites only `upstream.conf`, checks the whole configuration with
//! `nginx -t` (restoring the previous file when it fails), sends a graceful
//! reload, waits for the new worker generation, then for the old workers to
//! finish their requests and exit. Rendering and process-table parsing are
//! pure; this module must not decide which colour is active.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;
use tokio::time::Instant;

/// The upstream name in the rendered configuration.
pub const UPSTREAM: &str = "neutral_active";
/// The access log's format: `msec status request_time upstream_addr`.
pub const LOG_FORMAT: &str = "$msec $status $request_time $upstream_addr";
const POLL: Duration = Duration::from_millis(20);
/// How long nginx may take to start workers after a start or reload.
const GENERATION_TIMEOUT: Duration = Duration::from_secs(10);
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything that shapes the node's nginx.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NginxSettings {
    pub binary: PathBuf,
    /// Absolute prefix folder holding configuration, logs and temp files.
    pub prefix: PathBuf,
    /// The node's service address.
    pub listen: SocketAddr,
    /// An operator's snippet included in the `server` block.
    pub include: Option<PathBuf>,
    pub worker_processes: u32,
    /// Bound on how long old workers may finish requests after a reload.
    pub shutdown_timeout: Duration,
}

impl NginxSettings {
    pub fn config_path(&self) -> PathBuf {
        self.prefix.join("nginx.conf")
    }
    pub fn upstream_path(&self) -> PathBuf {
        self.prefix.join("upstream.conf")
    }
    pub fn pid_path(&self) -> PathBuf {
        self.prefix.join("logs/nginx.pid")
    }
    pub fn access_log_path(&self) -> PathBuf {
        self.prefix.join("logs/access.log")
    }
    pub fn error_log_path(&self) -> PathBuf {
        self.prefix.join("logs/error.log")
    }
}

/// Why an nginx operation failed.
#[derive(Debug, thiserror::Error)]
pub enum NginxError {
    #[error("writing {}: {source}", path.display())]
    Files {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot run {}: {source}", binary.display())]
    Spawn {
        binary: PathBuf,
        source: std::io::Error,
    },
    #[error("`nginx -t` rejected the configuration (the previous one stays in force): {0}")]
    ConfigRejected(String),
    #[error("nginx did not start: {0}")]
    StartFailed(String),
    #[error("nginx is not running (no live master in {})", .0.display())]
    NotRunning(PathBuf),
    #[error("nginx did not start new workers after the reload within {}: {detail}", humantime::format_duration(*waited))]
    ReloadFailed { waited: Duration, detail: String },
    #[error("`{command}` took longer than {}", humantime::format_duration(*timeout))]
    Timeout { command: String, timeout: Duration },
}

/// The main configuration file.
pub fn render_config(settings: &NginxSettings) -> String {
    let prefix = settings.prefix.display();
    let include = settings
        .include
        .as_ref()
        .map(|path| format!("        include {};\n", path.display()))
        .unwrap_or_default();
    format!(
        "# Written by neutral agent; rewritten at every start.\n\
         worker_processes {workers};\n\
         worker_rlimit_nofile 16384;\n\
         pid {prefix}/logs/nginx.pid;\n\
         error_log {prefix}/logs/error.log notice;\n\
         worker_shutdown_timeout {shutdown}s;\n\
         events {{\n    worker_connections 4096;\n}}\n\
         http {{\n\
         \x20   log_format neutral '{LOG_FORMAT}';\n\
         \x20   access_log {prefix}/logs/access.log neutral;\n\
         \x20   client_body_temp_path {prefix}/temp/client_body;\n\
         \x20   proxy_temp_path {prefix}/temp/proxy;\n\
         \x20   fastcgi_temp_path {prefix}/temp/fastcgi;\n\
         \x20   uwsgi_temp_path {prefix}/temp/uwsgi;\n\
         \x20   scgi_temp_path {prefix}/temp/scgi;\n\
         \x20   server_tokens off;\n\
         \x20   include {upstream};\n\
         \x20   server {{\n\
         \x20       listen {listen};\n\
         \x20       location / {{\n\
         \x20           proxy_pass http://{UPSTREAM};\n\
         \x20           proxy_set_header Host $host;\n\
         \x20           proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;\n\
         \x20           proxy_connect_timeout 2s;\n\
         \x20           proxy_max_temp_file_size 0;\n\
         \x20       }}\n\
         {include}\
         \x20   }}\n\
         }}\n",
        workers = settings.worker_processes.max(1),
        shutdown = settings.shutdown_timeout.as_secs().max(1),
        upstream = settings.upstream_path().display(),
        listen = settings.listen,
    )
}

/// The upstream file: one server, the active colour.
pub fn render_upstream(target: SocketAddr) -> String {
    format!("upstream {UPSTREAM} {{\n    server {target};\n}}\n")
}

/// The upstream address an `upstream.conf` names, if it is one we wrote.
pub fn parse_upstream(text: &str) -> Option<SocketAddr> {
    text.lines()
        .find_map(|line| line.trim().strip_prefix("server "))
        .and_then(|rest| rest.trim_end_matches(';').trim().parse().ok())
}

/// The parent pid in the text of `/proc/<pid>/stat`, skipping the command
/// name (which may hold spaces and parentheses); `None` for zombies.
pub fn parse_stat_parent(stat: &str) -> Option<u32> {
    let after_name = stat.get(stat.rfind(')')?.checked_add(1)?..)?;
    let mut fields = after_name.split_whitespace();
    let state = fields.next()?;
    if state == "Z" || state == "X" {
        return None;
    }
    fields.next()?.parse().ok()
}

/// What a switch did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SwitchReport {
    /// When the new worker generation was up.
    pub switched_after: Duration,
    /// Whether every old worker exited (finished its requests) in time.
    pub drained: bool,
    /// When the last old worker exited (or the wait gave up).
    pub drained_after: Duration,
}

/// The node's nginx.
#[derive(Clone, Debug)]
pub struct Nginx {
    settings: NginxSettings,
}

impl Nginx {
    pub fn new(settings: NginxSettings) -> Self {
        Nginx { settings }
    }

    pub fn settings(&self) -> &NginxSettings {
        &self.settings
    }

    /// The upstream currently written, if any.
    pub fn written_upstream(&self) -> Option<SocketAddr> {
        std::fs::read_to_string(self.settings.upstream_path())
            .ok()
            .as_deref()
            .and_then(parse_upstream)
    }

    /// Writes the configuration for `target`, checks it and starts nginx, or
    /// reloads the running master (one found through the pid file).
    pub async fn start(&self, target: SocketAddr) -> Result<(), NginxError> {
        let prefix = &self.settings.prefix;
        for sub in ["logs", "temp"] {
            let path = prefix.join(sub);
            std::fs::create_dir_all(&path).map_err(|source| NginxError::Files { path, source })?;
        }
        write(&self.settings.config_path(), &render_config(&self.settings))?;
        if self.master_pid().is_some() {
            self.switch(target).await.map(|_| ())
        } else {
            self.write_checked(target).await?;
            let output = self.nginx(&[]).await?;
            if !output.0 {
                return Err(NginxError::StartFailed(output.1));
            }
            let master = self
                .wait_master()
                .await
                .ok_or_else(|| NginxError::StartFailed(self.error_log_tail()))?;
            self.wait_new_generation(master, &BTreeSet::new())
                .await
                .map_err(|_| NginxError::StartFailed(self.error_log_tail()))?;
            Ok(())
        }
    }

    /// Points the running nginx at `target`: see the module documentation.
    pub async fn switch(&self, target: SocketAddr) -> Result<SwitchReport, NginxError> {
        let started = Instant::now();
        let master = self
            .master_pid()
            .ok_or_else(|| NginxError::NotRunning(self.settings.pid_path()))?;
        self.write_checked(target).await?;
        let old_workers = children(master);
        let (ok, message) = self.nginx(&["-s", "reload"]).await?;
        if !ok {
            return Err(NginxError::ReloadFailed {
                waited: Duration::ZERO,
                detail: message,
            });
        }
        self.wait_new_generation(master, &old_workers).await?;
        let switched_after = started.elapsed();
        let deadline = Instant::now() + self.settings.shutdown_timeout + Duration::from_secs(1);
        let drained = loop {
            let alive = children(master);
            if old_workers.is_disjoint(&alive) {
                break true;
            }
            if Instant::now() >= deadline {
                break false;
            }
            tokio::time::sleep(POLL).await;
        };
        Ok(SwitchReport {
            switched_after,
            drained,
            drained_after: started.elapsed(),
        })
    }

    /// Graceful stop (`nginx -s quit`): workers finish their requests; waits
    /// up to `timeout` for the master to exit.
    pub async fn quit(&self, timeout: Duration) {
        let Some(master) = self.master_pid() else {
            return;
        };
        let _ = self.nginx(&["-s", "quit"]).await;
        let deadline = Instant::now() + timeout;
        while process_alive(master) && Instant::now() < deadline {
            tokio::time::sleep(POLL).await;
        }
        if process_alive(master) {
            tracing::warn!(pid = master, "nginx did not quit in time; stopping it");
            let _ = self.nginx(&["-s", "stop"]).await;
        }
    }

    /// The live master named by the pid file.
    pub fn master_pid(&self) -> Option<u32> {
        let text = std::fs::read_to_string(self.settings.pid_path()).ok()?;
        let pid: u32 = text.trim().parse().ok()?;
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
        String::from_utf8_lossy(&cmdline)
            .contains("nginx")
            .then_some(pid)
    }

    /// Writes `upstream.conf` for `target` and checks the whole
    /// configuration; on failure the previous file is put back.
    async fn write_checked(&self, target: SocketAddr) -> Result<(), NginxError> {
        let path = self.settings.upstream_path();
        let previous = std::fs::read_to_string(&path).ok();
        write(&path, &render_upstream(target))?;
        let (ok, message) = self.nginx(&["-t", "-q"]).await?;
        if ok {
            return Ok(());
        }
        match previous {
            Some(text) => write(&path, &text)?,
            None => {
                let _ = std::fs::remove_file(&path);
            }
        }
        Err(NginxError::ConfigRejected(message))
    }

    /// Runs nginx with the node's prefix, configuration and error log;
    /// returns success and the (trimmed) stderr.
    async fn nginx(&self, args: &[&str]) -> Result<(bool, String), NginxError> {
        let s = &self.settings;
        let mut command = Command::new(&s.binary);
        command
            .arg("-p")
            .arg(&s.prefix)
            .arg("-c")
            .arg(s.config_path())
            .arg("-e")
            .arg(s.error_log_path())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = command.spawn().map_err(|source| NginxError::Spawn {
            binary: s.binary.clone(),
            source,
        })?;
        let shown = format!("nginx {}", args.join(" "));
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| NginxError::Timeout {
                command: shown,
                timeout: COMMAND_TIMEOUT,
            })?
            .map_err(|source| NginxError::Spawn {
                binary: s.binary.clone(),
                source,
            })?;
        let stderr = String::from_utf8_lossy(&output.stderr);
        let message = stderr
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.contains("test failed"))
            .collect::<Vec<_>>()
            .join("; ");
        Ok((output.status.success(), message))
    }

    async fn wait_master(&self) -> Option<u32> {
        let deadline = Instant::now() + GENERATION_TIMEOUT;
        loop {
            if let Some(pid) = self.master_pid() {
                return Some(pid);
            }
            if Instant::now() >= deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }

    async fn wait_new_generation(
        &self,
        master: u32,
        old: &BTreeSet<u32>,
    ) -> Result<(), NginxError> {
        let started = Instant::now();
        loop {
            if children(master).difference(old).next().is_some() {
                return Ok(());
            }
            if started.elapsed() >= GENERATION_TIMEOUT || !process_alive(master) {
                return Err(NginxError::ReloadFailed {
                    waited: started.elapsed(),
                    detail: self.error_log_tail(),
                });
            }
            tokio::time::sleep(POLL).await;
        }
    }

    fn error_log_tail(&self) -> String {
        let text = std::fs::read_to_string(self.settings.error_log_path()).unwrap_or_default();
        let tail: Vec<&str> = text.lines().rev().take(3).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join(" | ")
    }
}

fn write(path: &Path, text: &str) -> Result<(), NginxError> {
    let temporary = path.with_extension("tmp");
    std::fs::write(&temporary, text)
        .and_then(|()| std::fs::rename(&temporary, path))
        .map_err(|source| NginxError::Files {
            path: path.to_owned(),
            source,
        })
}

fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| parse_stat_parent(&stat))
        .is_some()
}

/// Live children of `parent`, from the process table.
fn children(parent: u32) -> BTreeSet<u32> {
    let mut found = BTreeSet::new();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        if parse_stat_parent(&stat) == Some(parent) {
            found.insert(pid);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> NginxSettings {
        NginxSettings {
            binary: "nginx".into(),
            prefix: "/var/lib/neutral/nginx".into(),
            listen: "127.0.0.2:80".parse().unwrap(),
            include: None,
            worker_processes: 1,
            shutdown_timeout: Duration::from_secs(30),
        }
    }

    #[test]
    fn the_config_listens_on_the_service_address_and_includes_the_upstream() {
        let text = render_config(&settings());
        expect_test::expect![[r#"
            # Written by neutral agent; rewritten at every start.
            worker_processes 1;
            worker_rlimit_nofile 16384;
            pid /var/lib/neutral/nginx/logs/nginx.pid;
            error_log /var/lib/neutral/nginx/logs/error.log notice;
            worker_shutdown_timeout 30s;
            events {
                worker_connections 4096;
            }
            http {
                log_format neutral '$msec $status $request_time $upstream_addr';
                access_log /var/lib/neutral/nginx/logs/access.log neutral;
                client_body_temp_path /var/lib/neutral/nginx/temp/client_body;
                proxy_temp_path /var/lib/neutral/nginx/temp/proxy;
                fastcgi_temp_path /var/lib/neutral/nginx/temp/fastcgi;
                uwsgi_temp_path /var/lib/neutral/nginx/temp/uwsgi;
                scgi_temp_path /var/lib/neutral/nginx/temp/scgi;
                server_tokens off;
                include /var/lib/neutral/nginx/upstream.conf;
                server {
                    listen 127.0.0.2:80;
                    location / {
                        proxy_pass http://neutral_active;
                        proxy_set_header Host $host;
                        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
                        proxy_connect_timeout 2s;
                        proxy_max_temp_file_size 0;
                    }
                }
            }
        "#]]
        .assert_eq(&text);
        let with_include = NginxSettings {
            include: Some("/etc/neutral/site.conf".into()),
            listen: "[::1]:8080".parse().unwrap(),
            ..settings()
        };
        let text = render_config(&with_include);
        assert!(
            text.contains("        include /etc/neutral/site.conf;\n    }\n}\n"),
            "{text}"
        );
        assert!(text.contains("listen [::1]:8080;"), "{text}");
    }

    #[test]
    fn the_upstream_file_round_trips() {
        let target: SocketAddr = "127.0.0.1:28080".parse().unwrap();
        let text = render_upstream(target);
        assert_eq!(
            text,
            "upstream neutral_active {\n    server 127.0.0.1:28080;\n}\n"
        );
        assert_eq!(parse_upstream(&text), Some(target));
        assert_eq!(parse_upstream("upstream x { }"), None);
    }

    #[test]
    fn the_parent_pid_is_read_after_the_command_name() {
        assert_eq!(
            parse_stat_parent("4242 (nginx) S 4200 4242 4242 0 -1"),
            Some(4200)
        );
        assert_eq!(parse_stat_parent("77 (weird) name)) R 12 77"), Some(12));
        assert_eq!(parse_stat_parent("77 (nginx) Z 12 77"), None);
        assert_eq!(parse_stat_parent("garbage"), None);
        assert_eq!(parse_stat_parent("1 (x)"), None);
    }
}

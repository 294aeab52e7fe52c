//! `neutral demo --hosts`: every node a Docker host of its own. One Docker
//! network per region (an internal bridge with a /24 of 198.18.0.0/15; this
//! machine is its gateway, `.1`, where `neutral serve` listens), the hosts'
//! image built from Debian's packages by `scripts/hosts` (no registry), and
//! the operator's launcher settings for the provider's `docker` launcher as
//! `neutral serve`'s environment (`TF_VAR_launcher=docker`,
//! `TF_VAR_docker_*`), so every node the story needs is a container
//! Terraform creates and destroys.
//!
//! This module owns the demo's networks and containers (labelled with the
//! demo's id); it decides nothing about the story.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};

/// The label on everything the demo creates in Docker.
const LABEL: &str = "org.neutral.demo";
/// The port the nodes' workload (busybox httpd in the hosts' image) serves
/// and the domain's probe asks.
const SERVICE_PORT: u16 = 80;

/// The demo's Docker networks and image.
#[derive(Debug)]
pub struct DockerHosts {
    /// Names start with this (`neutral-demo-<pid>-`).
    prefix: String,
    /// Region → first three octets of its /24.
    networks: BTreeMap<String, [u8; 3]>,
    image: String,
}

fn docker(args: &[&str]) -> Result<String> {
    let out = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run docker (is Docker Engine installed?)")?;
    if !out.status.success() {
        bail!(
            "docker {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

impl DockerHosts {
    /// Builds (or reuses) the hosts' image and creates a network per region.
    pub fn create(source: &Path, regions: &[&str]) -> Result<DockerHosts> {
        docker(&["version", "--format", "{{.Server.Version}}"])
            .context("--hosts needs a running Docker Engine")?;
        let built = Command::new(source.join("scripts/hosts"))
            .arg("build")
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .context("cannot run scripts/hosts build")?;
        if !built.status.success() {
            bail!(
                "scripts/hosts build failed (exit {:?})",
                built.status.code()
            );
        }
        let image = String::from_utf8_lossy(&built.stdout)
            .lines()
            .last()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .context("scripts/hosts build printed no image")?
            .to_owned();
        let mut hosts = DockerHosts {
            prefix: format!("neutral-demo-{}-", std::process::id()),
            networks: BTreeMap::new(),
            image,
        };
        for region in regions {
            if let Err(err) = hosts.create_network(region) {
                hosts.remove();
                return Err(err);
            }
        }
        Ok(hosts)
    }

    fn create_network(&mut self, region: &str) -> Result<()> {
        let name = format!("{}{region}", self.prefix);
        let mut last = String::new();
        for c in 0..=255u8 {
            let base = [198, 19, c];
            let subnet = format!("198.19.{c}.0/24");
            let gateway = format!("198.19.{c}.1");
            match docker(&[
                "network",
                "create",
                "--driver",
                "bridge",
                "--internal",
                "--subnet",
                &subnet,
                "--gateway",
                &gateway,
                "--label",
                &format!("{LABEL}={}", std::process::id()),
                &name,
            ]) {
                Ok(_) => {
                    self.networks.insert(region.to_owned(), base);
                    return Ok(());
                }
                Err(err) => {
                    last = err.to_string();
                    if !last.contains("overlaps") {
                        break;
                    }
                }
            }
        }
        bail!("cannot create the Docker network {name}: {last}")
    }

    fn addr(&self, region: &str, n: u8) -> Option<Ipv4Addr> {
        self.networks
            .get(region)
            .map(|[a, b, c]| Ipv4Addr::new(*a, *b, *c, n))
    }

    /// What the regions' nodes need of `neutral serve`: the operator's
    /// launcher settings and where each region's nodes reach the control
    /// plane (this machine's address on the region's network, `api_port`).
    pub fn serve_env(&self, bin_dir: &Path, api_port: u16) -> Vec<(String, String)> {
        let mut ranges = serde_json::Map::new();
        let mut control_planes = serde_json::Map::new();
        for region in self.networks.keys() {
            if let (Some(first), Some(last), Some(gateway)) = (
                self.addr(region, 50),
                self.addr(region, 59),
                self.addr(region, 1),
            ) {
                ranges.insert(region.clone(), format!("{first}-{last}").into());
                control_planes.insert(
                    region.clone(),
                    format!("http://{gateway}:{api_port}").into(),
                );
            }
        }
        let docker_args = serde_json::json!([
            "--env",
            format!("NEUTRAL_HOST_HTTPD={{address}}:{SERVICE_PORT}"),
            "--label",
            format!("{LABEL}={}", std::process::id()),
        ]);
        [
            ("TF_VAR_launcher", "docker".to_owned()),
            ("TF_VAR_docker_image", self.image.clone()),
            (
                "TF_VAR_docker_network",
                format!("{}{{region}}", self.prefix),
            ),
            ("TF_VAR_docker_args", docker_args.to_string()),
            ("TF_VAR_docker_binaries", bin_dir.display().to_string()),
            (
                "TF_VAR_address_ranges",
                serde_json::Value::Object(ranges).to_string(),
            ),
            (
                "TF_VAR_control_planes",
                serde_json::Value::Object(control_planes).to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// What the demo says about its nodes.
    pub fn describe(&self) -> String {
        let networks: Vec<String> = self
            .networks
            .iter()
            .map(|(region, [a, b, c])| format!("{region} {}{region} {a}.{b}.{c}.0/24", self.prefix))
            .collect();
        format!(
            "Docker hosts of their own (image {}), one network per region: {}",
            self.image,
            networks.join(", ")
        )
    }

    /// The machine of a slot dies: its container is killed.
    pub fn kill(&self, slot_dir: &Path) -> Result<String> {
        let container = std::fs::read_to_string(slot_dir.join("container"))
            .with_context(|| format!("no container recorded in {}", slot_dir.display()))?;
        let container = container.trim().to_owned();
        docker(&["kill", &container])?;
        Ok(container)
    }

    /// Removes every container and network of the demo; returns how many
    /// containers there were. Also done when dropped (a failed start).
    pub fn remove(&mut self) -> usize {
        let filter = format!("label={LABEL}={}", std::process::id());
        let ids = docker(&["ps", "-aq", "--filter", &filter]).unwrap_or_default();
        let ids: Vec<&str> = ids.split_whitespace().collect();
        if !ids.is_empty() {
            let mut unpause = vec!["unpause"];
            unpause.extend(&ids);
            let _ = docker(&unpause);
            let mut rm = vec!["rm", "--force", "--volumes"];
            rm.extend(&ids);
            let _ = docker(&rm);
        }
        for region in std::mem::take(&mut self.networks).keys() {
            let _ = docker(&["network", "rm", &format!("{}{region}", self.prefix)]);
        }
        ids.len()
    }
}

impl Drop for DockerHosts {
    fn drop(&mut self) {
        if !self.networks.is_empty() {
            self.remove();
        }
    }
}

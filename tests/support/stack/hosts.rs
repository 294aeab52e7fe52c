//! The five flows' deployment across hosts of the multi-host test bed
//! (`testbed.rs`): `neutral serve --run-terraform` on a control-plane host
//! (core network, attached to jp's and sg's), PowerDNS on a host of its own
//! on the core network, and nodes that Terraform creates: the scheduler's
//! node-pool runs use the provider's `docker` launcher, which starts each
//! node as a host on its region's network with the slot's address (an agent
//! beside busybox httpd, the workload the control plane probes on port 80).
//!
//! The launcher settings are the operator's (`TF_VAR_launcher=docker`,
//! `TF_VAR_docker_*` in the daemon's environment), which the scheduler also
//! locks; the repository is the same as on loopback.
//!
//! The provider in the control plane's host drives this machine's Docker
//! daemon (its socket and CLI are mounted), which mounts a slot's folder
//! into the node's host by its path on this machine; so the stack's folder
//! (repository, data, slot folders, token file) appears at the same path in
//! the control plane's host, as do the build's binaries (the hooks the
//! daemon's own pushes run name them by path).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{
    Death, Ground, Stack, StackOptions, agent_args, initial_cpu, install_hooks, platform_config,
    terraform_files,
};
use crate::cluster::{ADMIN_TOKEN, JOIN_TOKEN, Repo};
use crate::http;
use crate::services::{PDNS_API_KEY, terraform_or_skip};
use crate::testbed::deploy::{API_PORT, DNS_PORT, SERVICE_PORT};
use crate::testbed::{BED_LABEL, HostSpec, PID_LABEL, Testbed};

/// PowerDNS' API port in its host.
const PDNS_API_PORT: u16 = 8081;
/// How long a host may take to answer after it started.
const START: Duration = Duration::from_secs(60);

/// The stack on a new test bed, or `None` (the test is skipped) without
/// Terraform or Docker.
pub(super) fn start(options: StackOptions, death: Death) -> Option<Stack> {
    let terraform = terraform_or_skip("the five flows across hosts")?;
    let started = Instant::now();
    let bed = Testbed::new(&format!("flow{}", options.net), &["jp", "sg"])?;
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().to_path_buf();

    let mut files = platform_config(SERVICE_PORT, options);
    files.extend(terraform_files());
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    let repo = Repo::create(&root, &refs);
    let token_file = root.join("admin.token");
    std::fs::write(&token_file, ADMIN_TOKEN).expect("token file");

    let powerdns = options.powerdns.then(|| start_powerdns(&bed));

    let mut spec = bed.control_plane_host("cp", Vec::new());
    let cp_on = |region: &str| {
        spec.networks
            .iter()
            .find(|(network, _)| network == region)
            .map(|(_, ip)| *ip)
            .expect("the control plane is on every region's network")
    };
    let mut ranges = serde_json::Map::new();
    let mut control_planes = serde_json::Map::new();
    for region in ["jp", "sg"] {
        let network = bed.network(region);
        ranges.insert(
            region.to_owned(),
            Value::String(format!("{}-{}", network.addr(50), network.addr(59))),
        );
        control_planes.insert(
            region.to_owned(),
            Value::String(format!("http://{}:{API_PORT}", cp_on(region))),
        );
    }
    let docker_args = serde_json::json!([
        "--env",
        format!("NEUTRAL_HOST_HTTPD={{address}}:{SERVICE_PORT}"),
        // The test bed's labels: its teardown removes these hosts too.
        "--label",
        format!("{PID_LABEL}={}", std::process::id()),
        "--label",
        format!("{BED_LABEL}={}", bed.prefix),
    ]);
    let bin_dir = bed.bin_dir().to_path_buf();
    let neutral = bin_dir.join("neutral");
    // Response-rate limiting off: the flows ask DNS from one address
    // hundreds of times a second (40 queries a look), which RRL rightly
    // throttles — on loopback it exempts them — and its dropped answers
    // would stretch every look by the client's timeout.
    spec.command = vec![
        "sh".into(),
        "-c".into(),
        format!(
            "exec {neutral} serve --repo {bare} --data {data} --listen 0.0.0.0:{API_PORT} \
             --dns-listen 0.0.0.0:{DNS_PORT} --run-terraform --heartbeat-interval 300ms \
             --heartbeat-timeout 1500ms --sync-interval 2s --autoscale-interval 500ms \
             --drift-interval 1h --dns-rate-limit 0",
            neutral = neutral.display(),
            bare = repo.bare.display(),
            data = root.join("data").display(),
        ),
    ];
    let mut env = vec![
        ("NEUTRAL_JOIN_TOKEN", JOIN_TOKEN.to_owned()),
        ("NEUTRAL_ADMIN_TOKEN", ADMIN_TOKEN.to_owned()),
        ("NEUTRAL_LOG", "info,hickory_server=warn".to_owned()),
        ("TERRAFORM_BIN", "/usr/local/bin/terraform".to_owned()),
        ("TF_VAR_launcher", "docker".to_owned()),
        ("TF_VAR_docker_image", bed.image.clone()),
        ("TF_VAR_docker_network", format!("{}{{region}}", bed.prefix)),
        ("TF_VAR_docker_args", docker_args.to_string()),
        ("TF_VAR_docker_binaries", bin_dir.display().to_string()),
        ("TF_VAR_agent_args", agent_args().to_string()),
        ("TF_VAR_address_ranges", Value::Object(ranges).to_string()),
        (
            "TF_VAR_control_planes",
            Value::Object(control_planes).to_string(),
        ),
        (
            "TF_VAR_drain_grace",
            format!("{}s", super::DRAIN_GRACE_SECS),
        ),
    ];
    if let Some((url, _)) = &powerdns {
        env.push(("TF_VAR_powerdns_url", url.clone()));
        env.push(("PDNS_API_KEY", PDNS_API_KEY.to_owned()));
    }
    spec.env = env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
    spec.mounts = vec![
        (bin_dir.clone(), bin_dir.display().to_string()),
        (terraform, "/usr/local/bin/terraform".into()),
        (
            crate::find_tool("docker").expect("the docker CLI on PATH (the test bed needs it)"),
            "/usr/local/bin/docker".into(),
        ),
    ];
    spec.writable = vec![
        (root.clone(), root.display().to_string()),
        (
            PathBuf::from("/var/run/docker.sock"),
            "/var/run/docker.sock".into(),
        ),
    ];
    let cp = bed.start(spec);
    let api = SocketAddr::from((cp.ip("core"), API_PORT));
    let dns = SocketAddr::from((cp.ip("core"), DNS_PORT));
    let deadline = Instant::now() + START;
    while !http::request(api, "GET", "/healthz", None, None).is_ok_and(|r| r.status == 200) {
        assert!(
            Instant::now() < deadline && bed.running(&cp),
            "the control plane's host never answered /healthz:\n{}",
            bed.logs(&cp)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // From this machine (people's pushes) and from the control plane's host
    // (the autoscaler's).
    install_hooks(&repo, api, &token_file);
    Some(Stack {
        started,
        repo,
        api,
        dns,
        powerdns,
        ground: Ground::Hosts { cp, death, bed },
        cpu: initial_cpu(),
        nodes_dir: root.join("data/nodes"),
        dir,
    })
}

/// PowerDNS (gsqlite3, API on) on a host of the core network with the zone
/// `example.org`; its API URL and DNS address.
fn start_powerdns(bed: &Testbed) -> (String, SocketAddr) {
    let ip = bed.next_addr("core");
    let script = format!(
        "set -e; dir=/var/lib/pdns-flows; mkdir -p $dir; \
         sqlite3 $dir/pdns.db </usr/share/pdns-backend-sqlite3/schema/schema.sqlite3.sql; \
         printf '%s\\n' launch=gsqlite3 gsqlite3-database=$dir/pdns.db local-address=0.0.0.0 \
           local-port=53 api=yes api-key={PDNS_API_KEY} webserver=yes webserver-address=0.0.0.0 \
           webserver-port={PDNS_API_PORT} webserver-allow-from=0.0.0.0/0 enable-lua-records=yes \
           socket-dir=$dir guardian=no daemon=no >$dir/pdns.conf; \
         pdnsutil --config-dir=$dir create-zone example.org ns1.example.org >/dev/null; \
         exec pdns_server --config-dir=$dir"
    );
    let host = bed.start(HostSpec {
        name: "pdns".into(),
        networks: vec![("core".into(), ip)],
        command: vec!["sh".into(), "-c".into(), script],
        ..HostSpec::default()
    });
    let api = format!("http://{ip}:{PDNS_API_PORT}");
    let deadline = Instant::now() + START;
    loop {
        let (status, _) = crate::services::http(
            "GET",
            &format!("{api}/api/v1/servers/localhost/zones/example.org."),
            &[("X-API-Key", PDNS_API_KEY)],
            None,
        );
        if status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline && bed.running(&host),
            "PowerDNS' host never served its API:\n{}",
            bed.logs(&host)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    (api, SocketAddr::from((ip, 53)))
}

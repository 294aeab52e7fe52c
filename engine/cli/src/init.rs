//! `neutral init [DIR]`: scaffolds a platform repository — the intent
//! (`platform-config/`), the node counts (`infra/node-pool/<region>.tfvars`),
//! the Terraform roots and modules, the Ansible roles (`config/`), a CI
//! workflow and a README — from a few choices given as flags (or asked for
//! on a terminal).
//!
//! [`scaffold`] is pure: options in, files out, checked by the core's own
//! loader before anything is written. The roots, modules, roles and the CI
//! script are this repository's own files, embedded at build time, so a
//! scaffolded repository runs what `neutral serve` was tested with. [`run`]
//! is the IO edge: it never overwrites a file without `--force`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use neutral_core::config::{self, FileContent, RepoFile, dns_label_problem, normalize_dns_name};
use neutral_core::model::{CloudProvider, DnsBackendKind};

/// `neutral init`'s flags.
#[derive(Debug, clap::Args)]
pub struct InitArgs {
    /// The repository folder (created when missing).
    #[arg(default_value = ".")]
    pub dir: PathBuf,
    /// A region (repeat for several); the first is the primary. [default: jp]
    #[arg(long = "region", value_name = "NAME")]
    pub regions: Vec<String>,
    /// The domain its traffic policy answers for. [default: app.example.com]
    #[arg(long)]
    pub domain: Option<String>,
    /// The DNS zone holding the domain [default: the domain without its
    /// first label].
    #[arg(long)]
    pub zone: Option<String>,
    /// The DNS backend: embedded, powerdns, route53, cloudflare or alidns.
    /// [default: embedded]
    #[arg(long)]
    pub dns: Option<String>,
    /// Where the regions' machines come from: aws, alicloud, tencent,
    /// ucloud, edge or local. [default: edge]
    #[arg(long)]
    pub provider: Option<String>,
    /// Overwrite files that exist.
    #[arg(long)]
    pub force: bool,
}

/// The choices a scaffold is made of, checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Choices {
    pub regions: Vec<String>,
    pub domain: String,
    pub zone: String,
    pub dns: DnsBackendKind,
    pub provider: CloudProvider,
}

const DEFAULT_REGION: &str = "jp";
const DEFAULT_DOMAIN: &str = "app.example.com";

/// Files taken as they are from this repository.
const EMBEDDED: &[(&str, &str)] = &[
    (
        "infra/gtm/main.tf",
        include_str!("../../../infra/gtm/main.tf"),
    ),
    (
        "infra/node-pool/main.tf",
        include_str!("../../../infra/node-pool/main.tf"),
    ),
    (
        "infra/node-pool/variables.tf",
        include_str!("../../../infra/node-pool/variables.tf"),
    ),
    (
        "modules/README.md",
        include_str!("../../../modules/README.md"),
    ),
    (
        "modules/gtm/main.tf",
        include_str!("../../../modules/gtm/main.tf"),
    ),
    (
        "modules/gtm/outputs.tf",
        include_str!("../../../modules/gtm/outputs.tf"),
    ),
    (
        "modules/gtm/variables.tf",
        include_str!("../../../modules/gtm/variables.tf"),
    ),
    (
        "modules/gtm/versions.tf",
        include_str!("../../../modules/gtm/versions.tf"),
    ),
    (
        "modules/control-plane/main.tf",
        include_str!("../../../modules/control-plane/main.tf"),
    ),
    (
        "modules/control-plane/outputs.tf",
        include_str!("../../../modules/control-plane/outputs.tf"),
    ),
    (
        "modules/control-plane/variables.tf",
        include_str!("../../../modules/control-plane/variables.tf"),
    ),
    (
        "modules/control-plane/versions.tf",
        include_str!("../../../modules/control-plane/versions.tf"),
    ),
    (
        "modules/node/main.tf",
        include_str!("../../../modules/node/main.tf"),
    ),
    (
        "modules/node/outputs.tf",
        include_str!("../../../modules/node/outputs.tf"),
    ),
    (
        "modules/node/variables.tf",
        include_str!("../../../modules/node/variables.tf"),
    ),
    (
        "modules/node/versions.tf",
        include_str!("../../../modules/node/versions.tf"),
    ),
    (
        "modules/region/main.tf",
        include_str!("../../../modules/region/main.tf"),
    ),
    (
        "modules/region/outputs.tf",
        include_str!("../../../modules/region/outputs.tf"),
    ),
    (
        "modules/region/variables.tf",
        include_str!("../../../modules/region/variables.tf"),
    ),
    (
        "modules/region/versions.tf",
        include_str!("../../../modules/region/versions.tf"),
    ),
    (
        "config/README.md",
        include_str!("../../../config/README.md"),
    ),
    (
        "config/ansible.cfg",
        include_str!("../../../config/ansible.cfg"),
    ),
    (
        "config/playbooks/node.yml",
        include_str!("../../../config/playbooks/node.yml"),
    ),
    (
        "config/roles/neutral_node/README.md",
        include_str!("../../../config/roles/neutral_node/README.md"),
    ),
    (
        "config/roles/neutral_node/defaults/main.yml",
        include_str!("../../../config/roles/neutral_node/defaults/main.yml"),
    ),
    (
        "config/roles/neutral_node/handlers/main.yml",
        include_str!("../../../config/roles/neutral_node/handlers/main.yml"),
    ),
    (
        "config/roles/neutral_node/meta/main.yml",
        include_str!("../../../config/roles/neutral_node/meta/main.yml"),
    ),
    (
        "config/roles/neutral_node/tasks/agent.yml",
        include_str!("../../../config/roles/neutral_node/tasks/agent.yml"),
    ),
    (
        "config/roles/neutral_node/tasks/assert.yml",
        include_str!("../../../config/roles/neutral_node/tasks/assert.yml"),
    ),
    (
        "config/roles/neutral_node/tasks/binary.yml",
        include_str!("../../../config/roles/neutral_node/tasks/binary.yml"),
    ),
    (
        "config/roles/neutral_node/tasks/control_plane.yml",
        include_str!("../../../config/roles/neutral_node/tasks/control_plane.yml"),
    ),
    (
        "config/roles/neutral_node/tasks/main.yml",
        include_str!("../../../config/roles/neutral_node/tasks/main.yml"),
    ),
    (
        "config/roles/neutral_node/tasks/packages.yml",
        include_str!("../../../config/roles/neutral_node/tasks/packages.yml"),
    ),
    (
        "config/roles/neutral_node/templates/neutral-agent.service.j2",
        include_str!("../../../config/roles/neutral_node/templates/neutral-agent.service.j2"),
    ),
    (
        "config/playbooks/control-plane.yml",
        include_str!("../../../config/playbooks/control-plane.yml"),
    ),
    (
        "config/roles/neutral_control_plane/defaults/main.yml",
        include_str!("../../../config/roles/neutral_control_plane/defaults/main.yml"),
    ),
    (
        "config/roles/neutral_control_plane/handlers/main.yml",
        include_str!("../../../config/roles/neutral_control_plane/handlers/main.yml"),
    ),
    (
        "config/roles/neutral_control_plane/meta/main.yml",
        include_str!("../../../config/roles/neutral_control_plane/meta/main.yml"),
    ),
    (
        "config/roles/neutral_control_plane/tasks/assert.yml",
        include_str!("../../../config/roles/neutral_control_plane/tasks/assert.yml"),
    ),
    (
        "config/roles/neutral_control_plane/tasks/install.yml",
        include_str!("../../../config/roles/neutral_control_plane/tasks/install.yml"),
    ),
    (
        "config/roles/neutral_control_plane/tasks/main.yml",
        include_str!("../../../config/roles/neutral_control_plane/tasks/main.yml"),
    ),
    (
        "config/roles/neutral_control_plane/tasks/serve.yml",
        include_str!("../../../config/roles/neutral_control_plane/tasks/serve.yml"),
    ),
    (
        "config/roles/neutral_control_plane/templates/neutral-serve.service.j2",
        include_str!(
            "../../../config/roles/neutral_control_plane/templates/neutral-serve.service.j2"
        ),
    ),
    (
        "config/roles/neutral_control_plane/vars/main.yml",
        include_str!("../../../config/roles/neutral_control_plane/vars/main.yml"),
    ),
    (
        "config/inventories/control-plane/hosts.yml",
        include_str!("../../../config/inventories/control-plane/hosts.yml"),
    ),
    (
        "config/inventories/control-plane/group_vars/neutral_control_planes/main.yml",
        include_str!(
            "../../../config/inventories/control-plane/group_vars/neutral_control_planes/main.yml"
        ),
    ),
    (
        "config/inventories/control-plane/group_vars/neutral_control_planes/vault.yml",
        include_str!(
            "../../../config/inventories/control-plane/group_vars/neutral_control_planes/vault.yml"
        ),
    ),
    (
        "scripts/terraform.sh",
        include_str!("../../../examples/ci/terraform.sh"),
    ),
];

/// The example inventory of one region, written for each region (`jp`
/// stands for the region's name).
const INVENTORY: &[(&str, &str)] = &[
    (
        "config/inventories/jp/hosts.yml",
        include_str!("../../../config/inventories/jp/hosts.yml"),
    ),
    (
        "config/inventories/jp/group_vars/neutral_nodes/main.yml",
        include_str!("../../../config/inventories/jp/group_vars/neutral_nodes/main.yml"),
    ),
    (
        "config/inventories/jp/group_vars/neutral_nodes/vault.yml",
        include_str!("../../../config/inventories/jp/group_vars/neutral_nodes/vault.yml"),
    ),
];

/// Files made executable.
const EXECUTABLE: &[&str] = &["scripts/terraform.sh"];

/// Checks `args` into choices; every problem names its flag.
pub fn choices(args: &InitArgs) -> Result<Choices, Vec<String>> {
    let mut problems = Vec::new();
    let mut regions: Vec<String> = Vec::new();
    let given = if args.regions.is_empty() {
        vec![DEFAULT_REGION.to_owned()]
    } else {
        args.regions.clone()
    };
    for region in given.iter().flat_map(|r| r.split(',')).map(str::trim) {
        if let Some(problem) = dns_label_problem(region) {
            problems.push(format!("--region {region}: {problem}"));
        } else if regions.iter().any(|r| r == region) {
            problems.push(format!("--region {region}: given twice"));
        } else {
            regions.push(region.to_owned());
        }
    }
    let domain = normalize_dns_name(args.domain.as_deref().unwrap_or(DEFAULT_DOMAIN))
        .map_err(|problem| problems.push(format!("--domain: {problem}")))
        .ok();
    let zone = match (&args.zone, &domain) {
        (Some(zone), _) => normalize_dns_name(zone)
            .map_err(|problem| problems.push(format!("--zone: {problem}")))
            .ok(),
        (None, Some(domain)) => match domain.split_once('.') {
            Some((_, parent)) if parent.contains('.') => Some(parent.to_owned()),
            _ => {
                problems.push(format!(
                    "--domain {domain}: give --zone, the zone holding it (it has no parent zone \
                     below the top level)"
                ));
                None
            }
        },
        (None, None) => None,
    };
    if let (Some(domain), Some(zone)) = (&domain, &zone)
        && domain != zone
        && !domain.ends_with(&format!(".{zone}"))
    {
        problems.push(format!(
            "--zone {zone}: the domain {domain} is not inside it"
        ));
    }
    let dns = args
        .dns
        .as_deref()
        .unwrap_or("embedded")
        .parse::<DnsBackendKind>()
        .map_err(|err| problems.push(format!("--dns: {err}")))
        .ok();
    let provider_name = args.provider.as_deref().unwrap_or("edge");
    let provider = CloudProvider::ALL
        .iter()
        .copied()
        .find(|p| p.as_str() == provider_name);
    if provider.is_none() {
        let names: Vec<&str> = CloudProvider::ALL.iter().map(|p| p.as_str()).collect();
        problems.push(format!(
            "--provider: `{provider_name}` is not one of: {}",
            names.join(", ")
        ));
    }
    match (domain, zone, dns, provider) {
        (Some(domain), Some(zone), Some(dns), Some(provider)) if problems.is_empty() => {
            Ok(Choices {
                regions,
                domain,
                zone,
                dns,
                provider,
            })
        }
        _ => Err(problems),
    }
}

/// Every file of the scaffold, sorted by path.
pub fn scaffold(choices: &Choices) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = EMBEDDED
        .iter()
        .map(|(path, text)| ((*path).to_owned(), (*text).to_owned()))
        .collect();
    let Choices {
        regions,
        domain,
        zone,
        dns,
        provider,
    } = choices;
    let provider = provider.as_str();
    for (index, region) in regions.iter().enumerate() {
        let others: Vec<&str> = regions
            .iter()
            .filter(|r| *r != region)
            .map(String::as_str)
            .collect();
        files.push((
            format!("platform-config/regions/{region}.yaml"),
            format!(
                "# Region {region}. The file name is the region name.\n\
                 name: {region}\n\
                 provider: {provider}       # aws | alicloud | tencent | ucloud | edge | local\n\
                 min_nodes: 1            # the autoscaler never goes below this\n\
                 max_nodes: 5\n\
                 base_weight: {weight}        # 0..=1000; a GTM policy may override it per domain\n\
                 state: up               # up | down (an operator's override)\n\
                 failover: [{failover}]  # regions that take over when {region} is down\n",
                weight = if index == 0 { 100 } else { 50 },
                failover = others.join(", "),
            ),
        ));
        files.push((
            format!("platform-config/autoscale/{region}.yaml"),
            format!(
                "# Autoscale policy of region {region}: any scale_up threshold sustained for\n\
                 # `for` adds `step` nodes; scale_down needs all of its thresholds.\n\
                 region: {region}\n\
                 scale_up:   {{ cpu_above: 0.75, rtt_ms_above: 250, error_rate_above: 0.05, for: 60s, step: 1 }}\n\
                 scale_down: {{ cpu_below: 0.30, for: 300s, step: 1 }}\n\
                 cooldown: 300s\n\
                 failover_capacity: true\n"
            ),
        ));
        files.push((
            config::node_pool_path(region),
            format!(
                "# Written by people and by the autoscaler, which rewrites desired_nodes in\n\
                 # place and keeps these comments.\n\
                 region        = \"{region}\"\n\
                 desired_nodes = 1\n"
            ),
        ));
        for (path, text) in INVENTORY {
            files.push((
                path.replace("/jp/", &format!("/{region}/")),
                inventory_for(text, region),
            ));
        }
    }
    let weights: Vec<String> = regions
        .iter()
        .enumerate()
        .map(|(i, r)| format!("{r}: {}", if i == 0 { 100 } else { 50 }))
        .collect();
    let policy = domain.split('.').next().unwrap_or("app");
    let ttl = dns.ttl_floor().max(30);
    files.push((
        format!("platform-config/gtm/{policy}.yaml"),
        format!(
            "# Global traffic policy of {domain}. The file name names the policy.\n\
             domain: {domain}\n\
             zone: {zone}\n\
             type: A                  # A | AAAA\n\
             ttl: {ttl}                  # seconds; each DNS backend has its own floor\n\
             dns: {dns}       # embedded | powerdns | route53 | cloudflare | alidns\n\
             min_ready_nodes: 1       # per region: fewer ready nodes => region weight 0\n\
             regions: {{ {weights} }}\n\
             all_down: fail_open      # fail_open | last_known_good\n\
             probe: {{ http: /healthz, port: 80, interval: 10s, timeout: 2s, rise: 2, fall: 3 }}\n\
             slow_start: 60s\n",
            dns = dns.as_str(),
            weights = weights.join(", "),
        ),
    ));
    files.push((".gitignore".to_owned(), GITIGNORE.to_owned()));
    files.push((
        ".github/workflows/terraform.yml".to_owned(),
        WORKFLOW.to_owned(),
    ));
    files.push(("README.md".to_owned(), readme(choices)));
    files.sort();
    files
}

fn inventory_for(text: &str, region: &str) -> String {
    text.replace("Region jp", &format!("Region {region}"))
        .replace(
            "neutral_node_pool.jp",
            &format!("neutral_node_pool.{region}"),
        )
        .replace("jp-", &format!("{region}-"))
        .replace("neutral_region: jp", &format!("neutral_region: {region}"))
}

const GITIGNORE: &str = "\
# Terraform's working files and local state never belong in Git.
.terraform/
*.tfstate
*.tfstate.*
*.tfplan
crash.log
";

/// The CI workflow: the pre-receive checks on every push and pull request,
/// Terraform planned on pull requests and applied on `main`.
const WORKFLOW: &str = r#"# Terraform for neutral's roots, run by CI instead of `neutral serve --run-terraform`:
# the pre-receive checks on every change, a plan on pull requests, plan and
# apply on main, and a plan every 30 minutes as a drift check.
#
# Repository settings it reads: vars.NEUTRAL_URL and vars.NEUTRAL_SHA256 (the
# neutral release to install and its checksum), vars.NEUTRAL_ENDPOINT (the
# control plane) and secrets.NEUTRAL_TOKEN (a token that may write records
# and node pools), plus the DNS backends' credentials your policies need.
name: neutral
on:
  push:
    branches: [main]
  pull_request:
  schedule:
    - cron: "*/30 * * * *"
concurrency:
  group: neutral-terraform
  cancel-in-progress: false
permissions:
  contents: read
jobs:
  checks:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
        with:
          fetch-depth: 0
      - name: Install neutral
        run: |
          curl -fsSL -o "$RUNNER_TEMP/neutral" "${{ vars.NEUTRAL_URL }}"
          echo "${{ vars.NEUTRAL_SHA256 }}  $RUNNER_TEMP/neutral" | sha256sum -c -
          install -m 0755 "$RUNNER_TEMP/neutral" /usr/local/bin/neutral
      - name: Validate platform-config
        run: neutral validate .
      - name: Pre-receive checks (configuration and Terraform policy of the new tip)
        run: |
          before="${{ github.event.pull_request.base.sha || github.event.before }}"
          if [ -z "$before" ] || [ "$before" = "0000000000000000000000000000000000000000" ]; then
            before=0000000000000000000000000000000000000000
          fi
          echo "$before $(git rev-parse HEAD) refs/heads/main" | neutral hook pre-receive
  terraform:
    needs: checks
    runs-on: ubuntu-latest
    env:
      NEUTRAL_ENDPOINT: ${{ vars.NEUTRAL_ENDPOINT }}
      NEUTRAL_TOKEN: ${{ secrets.NEUTRAL_TOKEN }}
      PLAN_ONLY: ${{ (github.event_name == 'push' && github.ref == 'refs/heads/main') && '0' || '1' }}
    steps:
      - uses: actions/checkout@v4
      - uses: hashicorp/setup-terraform@v3
        with:
          terraform_wrapper: false
      - name: Plan, and apply on main
        run: scripts/terraform.sh .
"#;

fn readme(choices: &Choices) -> String {
    let regions = choices.regions.join(", ");
    let first = choices
        .regions
        .first()
        .map_or(DEFAULT_REGION, String::as_str);
    format!(
        "# Platform configuration\n\n\
         The intent `neutral serve` follows: regions {regions}, the domain {domain} answered \
         through the `{dns}` DNS backend, and each region's node pool. Scaffolded by \
         `neutral init`; every file is yours to edit.\n\n\
         | path | what it holds | who changes it |\n\
         |---|---|---|\n\
         | `platform-config/regions/` | one file per region: limits, weight, failover | people |\n\
         | `platform-config/gtm/` | one traffic policy per domain | people |\n\
         | `platform-config/autoscale/` | one autoscale policy per region | people |\n\
         | `infra/node-pool/<region>.tfvars` | the node count of each region | people and the autoscaler |\n\
         | `infra/gtm`, `infra/node-pool`, `modules/` | the Terraform roots neutral runs | rarely |\n\
         | `config/` | Ansible roles that turn a fresh Debian machine into a node or the control plane | people |\n\
         | `.github/workflows/terraform.yml` | checks on every change; Terraform plan and apply | rarely |\n\
         | `scripts/terraform.sh` | plans and applies the roots as the control plane's scheduler does | rarely |\n\n\
         ## First steps\n\n\
         ```sh\n\
         neutral validate .                       # what the pre-receive hook checks\n\
         git init -b main && git add -A && git commit -m \"platform config\"\n\
         git clone --bare . /srv/git/platform.git   # the repository the control plane follows\n\
         neutral hooks install --repo /srv/git/platform.git --control-plane http://127.0.0.1:7400\n\
         neutral serve --repo /srv/git/platform.git --data /var/lib/neutral --run-terraform\n\
         ```\n\n\
         The machines of region {first}: put each slot of `neutral_node_pool.{first}` in \
         `config/inventories/{first}/hosts.yml`, the control plane's URL and the release of \
         `neutral` in its `group_vars`, the join token in its `vault.yml` (encrypted with \
         `ansible-vault`), then run `ansible-playbook -i config/inventories/{first} \
         config/playbooks/node.yml` from `config/`.\n",
        domain = choices.domain,
        dns = choices.dns.as_str(),
    )
}

/// The core's verdict on the scaffold's configuration: the diagnostics that
/// are errors.
pub fn errors_in(files: &[(String, String)]) -> Vec<String> {
    let repo: Vec<RepoFile> = files
        .iter()
        .filter(|(path, _)| config::is_config_path(path))
        .map(|(path, text)| RepoFile {
            path: path.clone(),
            content: FileContent::Bytes(text.clone().into_bytes()),
        })
        .collect();
    config::load(&repo)
        .diagnostics
        .iter()
        .filter(|d| d.is_error())
        .map(ToString::to_string)
        .collect()
}

/// Asks for what the flags left out, when a person is at a terminal.
fn ask_missing(args: &mut InitArgs) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return Ok(());
    }
    let ask = |question: &str, default: &str| -> Result<String> {
        print!("{question} [{default}]: ");
        std::io::stdout().flush().context("writing the question")?;
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the answer")?;
        let line = line.trim();
        Ok(if line.is_empty() { default } else { line }.to_owned())
    };
    if args.regions.is_empty() {
        args.regions = vec![ask(
            "Regions (comma-separated, the primary first)",
            DEFAULT_REGION,
        )?];
    }
    if args.domain.is_none() {
        args.domain = Some(ask("Domain", DEFAULT_DOMAIN)?);
    }
    if args.dns.is_none() {
        args.dns = Some(ask(
            "DNS backend (embedded, powerdns, route53, cloudflare, alidns)",
            "embedded",
        )?);
    }
    if args.provider.is_none() {
        args.provider = Some(ask(
            "Machines from (aws, alicloud, tencent, ucloud, edge, local)",
            "edge",
        )?);
    }
    Ok(())
}

/// Writes the scaffold into `args.dir`; refuses, listing them, to replace
/// files that exist unless `--force`.
pub fn run(mut args: InitArgs) -> Result<()> {
    ask_missing(&mut args)?;
    let choices = match choices(&args) {
        Ok(choices) => choices,
        Err(problems) => bail!("{}", problems.join("\n")),
    };
    let files = scaffold(&choices);
    let errors = errors_in(&files);
    if !errors.is_empty() {
        bail!(
            "the scaffold does not validate (a bug in neutral init):\n{}",
            errors.join("\n")
        );
    }
    let dir = &args.dir;
    let existing: Vec<&str> = files
        .iter()
        .map(|(path, _)| path.as_str())
        .filter(|path| dir.join(path).exists())
        .collect();
    if !existing.is_empty() && !args.force {
        bail!(
            "{} already holds {} of the scaffold's files (nothing was written; --force \
             replaces them):\n  {}",
            dir.display(),
            existing.len(),
            existing.join("\n  ")
        );
    }
    for (path, text) in &files {
        write_file(dir, path, text)?;
    }
    println!(
        "neutral init: {} files in {} — regions {}, {} through {}, machines from {}",
        files.len(),
        dir.display(),
        choices.regions.join(", "),
        choices.domain,
        choices.dns.as_str(),
        choices.provider.as_str()
    );
    println!("next: see {}", dir.join("README.md").display());
    Ok(())
}

fn write_file(dir: &Path, path: &str, text: &str) -> Result<()> {
    let target = dir.join(path);
    if let Some(parent) = target.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    if EXECUTABLE.contains(&path) {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
            .with_context(|| format!("making {} executable", target.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(flags: &[&str]) -> InitArgs {
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            init: InitArgs,
        }
        let mut all = vec!["init"];
        all.extend_from_slice(flags);
        <Cli as clap::Parser>::parse_from(all).init
    }

    #[test]
    fn the_scaffold_validates_for_every_backend_and_provider() {
        for dns in DnsBackendKind::ALL {
            for provider in CloudProvider::ALL {
                let choices = choices(&args(&[
                    "--region",
                    "jp",
                    "--region",
                    "sg,us",
                    "--dns",
                    dns.as_str(),
                    "--provider",
                    provider.as_str(),
                ]))
                .expect("valid flags");
                let files = scaffold(&choices);
                assert_eq!(
                    errors_in(&files),
                    Vec::<String>::new(),
                    "{} / {}",
                    dns.as_str(),
                    provider.as_str()
                );
            }
        }
    }

    #[test]
    fn the_tree_of_a_two_region_scaffold() {
        let choices = choices(&args(&[
            "--region",
            "jp,sg",
            "--domain",
            "shop.example.net",
        ]))
        .expect("valid flags");
        let paths: Vec<String> = scaffold(&choices).into_iter().map(|(p, _)| p).collect();
        expect_test::expect![[r#"
            .github/workflows/terraform.yml
            .gitignore
            README.md
            config/README.md
            config/ansible.cfg
            config/inventories/control-plane/group_vars/neutral_control_planes/main.yml
            config/inventories/control-plane/group_vars/neutral_control_planes/vault.yml
            config/inventories/control-plane/hosts.yml
            config/inventories/jp/group_vars/neutral_nodes/main.yml
            config/inventories/jp/group_vars/neutral_nodes/vault.yml
            config/inventories/jp/hosts.yml
            config/inventories/sg/group_vars/neutral_nodes/main.yml
            config/inventories/sg/group_vars/neutral_nodes/vault.yml
            config/inventories/sg/hosts.yml
            config/playbooks/control-plane.yml
            config/playbooks/node.yml
            config/roles/neutral_control_plane/defaults/main.yml
            config/roles/neutral_control_plane/handlers/main.yml
            config/roles/neutral_control_plane/meta/main.yml
            config/roles/neutral_control_plane/tasks/assert.yml
            config/roles/neutral_control_plane/tasks/install.yml
            config/roles/neutral_control_plane/tasks/main.yml
            config/roles/neutral_control_plane/tasks/serve.yml
            config/roles/neutral_control_plane/templates/neutral-serve.service.j2
            config/roles/neutral_control_plane/vars/main.yml
            config/roles/neutral_node/README.md
            config/roles/neutral_node/defaults/main.yml
            config/roles/neutral_node/handlers/main.yml
            config/roles/neutral_node/meta/main.yml
            config/roles/neutral_node/tasks/agent.yml
            config/roles/neutral_node/tasks/assert.yml
            config/roles/neutral_node/tasks/binary.yml
            config/roles/neutral_node/tasks/control_plane.yml
            config/roles/neutral_node/tasks/main.yml
            config/roles/neutral_node/tasks/packages.yml
            config/roles/neutral_node/templates/neutral-agent.service.j2
            infra/gtm/main.tf
            infra/node-pool/jp.tfvars
            infra/node-pool/main.tf
            infra/node-pool/sg.tfvars
            infra/node-pool/variables.tf
            modules/README.md
            modules/control-plane/main.tf
            modules/control-plane/outputs.tf
            modules/control-plane/variables.tf
            modules/control-plane/versions.tf
            modules/gtm/main.tf
            modules/gtm/outputs.tf
            modules/gtm/variables.tf
            modules/gtm/versions.tf
            modules/node/main.tf
            modules/node/outputs.tf
            modules/node/variables.tf
            modules/node/versions.tf
            modules/region/main.tf
            modules/region/outputs.tf
            modules/region/variables.tf
            modules/region/versions.tf
            platform-config/autoscale/jp.yaml
            platform-config/autoscale/sg.yaml
            platform-config/gtm/shop.yaml
            platform-config/regions/jp.yaml
            platform-config/regions/sg.yaml
            scripts/terraform.sh
        "#]]
        .assert_eq(&(paths.join("\n") + "\n"));
        let files = scaffold(&choices);
        let text = |path: &str| {
            files
                .iter()
                .find(|(p, _)| p == path)
                .map(|(_, t)| t.clone())
                .unwrap_or_default()
        };
        expect_test::expect![[r#"
            # Global traffic policy of shop.example.net. The file name names the policy.
            domain: shop.example.net
            zone: example.net
            type: A                  # A | AAAA
            ttl: 30                  # seconds; each DNS backend has its own floor
            dns: embedded       # embedded | powerdns | route53 | cloudflare | alidns
            min_ready_nodes: 1       # per region: fewer ready nodes => region weight 0
            regions: { jp: 100, sg: 50 }
            all_down: fail_open      # fail_open | last_known_good
            probe: { http: /healthz, port: 80, interval: 10s, timeout: 2s, rise: 2, fall: 3 }
            slow_start: 60s
        "#]]
        .assert_eq(&text("platform-config/gtm/shop.yaml"));
        let hosts = text("config/inventories/sg/hosts.yml");
        assert!(hosts.contains("sg-1:") && !hosts.contains("jp"), "{hosts}");
        assert!(text("platform-config/regions/sg.yaml").contains("failover: [jp]"));
    }

    #[test]
    fn every_bad_flag_is_named_at_once() {
        let problems = choices(&args(&[
            "--region",
            "Tokyo",
            "--region",
            "jp,jp",
            "--domain",
            "app..example.com",
            "--dns",
            "bind",
            "--provider",
            "gcp",
        ]))
        .unwrap_err();
        let text = problems.join("\n");
        for expected in [
            "--region Tokyo:",
            "--region jp: given twice",
            "--domain:",
            "--dns: `bind` is not one of",
            "--provider: `gcp` is not one of",
        ] {
            assert!(text.contains(expected), "{expected} in\n{text}");
        }
        let outside = choices(&args(&[
            "--domain",
            "app.example.com",
            "--zone",
            "example.org",
        ]))
        .unwrap_err();
        assert!(outside[0].contains("is not inside it"), "{outside:?}");
        let top = choices(&args(&["--domain", "example"])).unwrap_err();
        assert!(top[0].contains("give --zone"), "{top:?}");
    }

    /// The files of `dir` (relative to `root`), recursively.
    fn files_under(root: &Path, dir: &str) -> Vec<String> {
        let mut found = Vec::new();
        let mut pending = vec![root.join(dir)];
        while let Some(folder) = pending.pop() {
            for entry in std::fs::read_dir(&folder).unwrap().flatten() {
                let path = entry.path();
                if path.is_dir() {
                    pending.push(path);
                } else if let Ok(relative) = path.strip_prefix(root) {
                    found.push(relative.to_string_lossy().into_owned());
                }
            }
        }
        found
    }

    #[test]
    fn every_root_module_and_role_file_of_this_repository_is_in_the_scaffold() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let mut ours: Vec<String> = ["infra", "modules", "config"]
            .iter()
            .flat_map(|dir| files_under(&root, dir))
            .filter(|p| {
                !p.ends_with(".tfvars")
                    && !p.contains("/.terraform")
                    && !p.contains(".terraform.lock")
                    && !p.starts_with("config/inventories/")
            })
            .collect();
        ours.sort();
        let mut embedded: Vec<String> = EMBEDDED
            .iter()
            .map(|(path, _)| (*path).to_owned())
            .filter(|p| !p.starts_with("scripts/") && !p.starts_with("config/inventories/"))
            .collect();
        embedded.sort();
        assert_eq!(embedded, ours, "EMBEDDED must list every such file");
    }

    #[test]
    fn alidns_gets_its_ttl_floor() {
        let choices = choices(&args(&["--dns", "alidns"])).expect("valid");
        let files = scaffold(&choices);
        let policy = files
            .iter()
            .find(|(p, _)| p == "platform-config/gtm/app.yaml")
            .map(|(_, t)| t.as_str())
            .unwrap_or_default();
        assert!(policy.contains("ttl: 600"), "{policy}");
    }
}

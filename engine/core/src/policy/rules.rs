//! The policy's vocabulary: where its inputs live, the providers it always
//! knows, the rules refusals name, and provider source addresses. A leaf:
//! both the checker and the policy file read it; it reads neither.

/// Where the policy file lives in the repository.
pub const POLICY_FILE: &str = ".neutral/terraform-policy.yaml";
/// The folders whose Terraform files are judged.
pub const TERRAFORM_FOLDERS: [&str; 2] = ["infra/", "modules/"];
/// neutral's own provider, always allowed.
pub const NEUTRAL_PROVIDER: &str = "registry.terraform.io/neutral/neutral";
/// Terraform's built-in provider (`terraform_data`, `terraform_remote_state`).
pub const BUILTIN_PROVIDER: &str = "terraform.io/builtin/terraform";

/// The rules, as refusals name them.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Rule {
    Provider,
    Provisioner,
    ExternalData,
    RemoteState,
    Backend,
    ModuleSource,
    FilePath,
    JsonConfig,
    Symlink,
    Syntax,
    Policy,
}

impl Rule {
    pub fn name(self) -> &'static str {
        match self {
            Rule::Provider => "provider",
            Rule::Provisioner => "provisioner",
            Rule::ExternalData => "external-data",
            Rule::RemoteState => "remote-state",
            Rule::Backend => "backend",
            Rule::ModuleSource => "module-source",
            Rule::FilePath => "file-path",
            Rule::JsonConfig => "json-config",
            Rule::Symlink => "symlink",
            Rule::Syntax => "syntax",
            Rule::Policy => "policy",
        }
    }
}

/// A provider source address in its full form (`host/namespace/type`,
/// lowercase), or why it is not one.
pub fn normalize_source(source: &str) -> Result<String, String> {
    let lower = source.trim().to_ascii_lowercase();
    let parts: Vec<&str> = lower.split('/').collect();
    let valid = |part: &str| {
        !part.is_empty()
            && part
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
    };
    if !parts.iter().all(|p| valid(p)) {
        return Err(format!(
            "`{source}` is not a provider source address (`namespace/name` or `host/namespace/name`)"
        ));
    }
    match parts.as_slice() {
        [namespace, name] => Ok(format!("registry.terraform.io/{namespace}/{name}")),
        [_, _, _] => Ok(lower),
        _ => Err(format!(
            "`{source}` is not a provider source address (`namespace/name` or `host/namespace/name`)"
        )),
    }
}

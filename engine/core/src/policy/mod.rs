//! The Terraform policy: what the HCL of the roots and modules the scheduler
//! runs (`infra/**`, `modules/**`) may contain, judged statically before any
//! Terraform command runs — by the `pre-receive`/`pre-commit` hooks and again
//! by the scheduler before `plan` (so a commit that bypassed the hooks still
//! cannot run).
//!
//! Terraform runs on the control plane's machine, so anything in a pushed
//! `.tf` that executes code there or reads its files can reach the
//! control plane's secrets. The rules (each refusal names the rule):
//!
//! - `provider`: every provider a module uses — `required_providers`,
//!   `provider` blocks, the provider of every `resource`, `data`,
//!   `ephemeral` and `action` type (its `provider` meta-argument, else the
//!   type's prefix), provider functions `provider::<name>::…` — is
//!   `neutral/neutral`, Terraform's built-in `terraform` provider, or listed
//!   in the policy file. Providers are programs Terraform downloads and runs.
//! - `provisioner`: no `provisioner` block at all (`local-exec`,
//!   `remote-exec`, `file`, and the legacy ones): they run commands.
//! - `external-data`: no `data "external"` (it runs a program), whatever the
//!   policy file allows.
//! - `remote-state`: no `data "terraform_remote_state"` (it reads any state
//!   file or backend the configuration names).
//! - `backend`: no `backend` or `cloud` block: the scheduler keeps state
//!   (a backend could send it, or read it, anywhere).
//! - `module-source`: a module's `source` is a literal local path that stays
//!   inside `infra/` or `modules/` (so the policy saw its files), or starts
//!   with a prefix the policy file allows.
//! - `file-path`: file-reading functions (`file`, `templatefile`, `fileset`,
//!   `filebase64`, `fileexists`, `file*sha*`, `filemd5`) must not name an
//!   absolute or home path, nor climb out of the repository with `..`. A
//!   path whose start is computed (not a literal or `path.module`,
//!   `path.root`, `path.cwd`) cannot be judged statically and is not
//!   reported: that is a known limit (ARCHITECTURE.md, run isolation).
//! - `json-config`: no `*.tf.json` (Terraform reads them; this checker reads
//!   HCL only).
//! - `symlink`: no symbolic link below `infra/` or `modules/` (it could
//!   point at any file of the machine).
//! - `syntax`: a file that does not parse (or nests deeper than 64 levels,
//!   or is over the size limit) cannot be judged, so it is refused.
//! - `policy`: the policy file itself is invalid.
//!
//! Built-in `terraform` provider: `terraform_data` is allowed (it stores
//! values and triggers replacements), never with provisioners;
//! `terraform_remote_state` is refused (above).
//!
//! This module owns the rules and the policy file's schema. It is pure: the
//! caller hands in the files (see [`is_policy_input`]) as bytes; it must not
//! read files, run Terraform or decide what a refusal means for a push or a
//! run.

mod file;
mod rules;

use std::collections::BTreeMap;
use std::ops::Range;

use hcl_edit::Span;
use hcl_edit::expr::{Expression, FuncCall, ObjectKey, TraversalOperator};
use hcl_edit::structure::{Block, Body, Structure};
use hcl_edit::template::Element;
use hcl_edit::visit::{Visit, visit_func_call};

use crate::config::{FileContent, MAX_FILE_BYTES, RepoFile};
use crate::diag::{Diagnostic, Pos};

pub use self::file::Policy;
pub use self::rules::{
    BUILTIN_PROVIDER, NEUTRAL_PROVIDER, POLICY_FILE, Rule, TERRAFORM_FOLDERS, normalize_source,
};

/// Deepest bracket nesting judged; deeper files are refused unparsed.
const MAX_NESTING: usize = 64;

/// Functions that read files of the machine Terraform runs on.
const FILE_FUNCTIONS: [&str; 12] = [
    "file",
    "fileexists",
    "fileset",
    "filebase64",
    "filebase64sha256",
    "filebase64sha512",
    "filemd5",
    "filesha1",
    "filesha256",
    "filesha512",
    "templatefile",
    "filebase32",
];

/// Whether `path` is a file the policy check needs: the policy file and
/// everything below `infra/` and `modules/`.
pub fn is_policy_input(path: &str) -> bool {
    path == POLICY_FILE || TERRAFORM_FOLDERS.iter().any(|f| path.starts_with(f))
}

fn error(path: &str, pos: Pos, rule: Rule, message: impl std::fmt::Display) -> Diagnostic {
    Diagnostic::error(path, pos, format!("[{}] {message}", rule.name()))
}

/// Judges `files` (any repository files; those [`is_policy_input`] selects
/// are read, the policy file among them) and returns every finding, sorted
/// by place. No error means Terraform may run these roots and modules.
pub fn check(files: &[RepoFile]) -> Vec<Diagnostic> {
    let mut diagnostics = Vec::new();
    let policy = Policy::load(
        files.iter().find(|f| f.path == POLICY_FILE),
        &mut diagnostics,
    );
    // Parse every Terraform file, grouped by module folder.
    let mut modules: BTreeMap<String, Vec<Parsed>> = BTreeMap::new();
    for file in files {
        if !TERRAFORM_FOLDERS.iter().any(|f| file.path.starts_with(f)) {
            continue;
        }
        let path = file.path.as_str();
        let is_tf = path.ends_with(".tf");
        let is_json = path.ends_with(".tf.json");
        match &file.content {
            FileContent::Symlink(target) => {
                diagnostics.push(error(
                    path,
                    Pos::START,
                    Rule::Symlink,
                    format!(
                        "symbolic link to `{target}`: Terraform's folders may hold only regular files"
                    ),
                ));
            }
            FileContent::Oversized(size) if is_tf || is_json => diagnostics.push(error(
                path,
                Pos::START,
                Rule::Syntax,
                format!("{size} bytes is over the {MAX_FILE_BYTES}-byte limit; not judged"),
            )),
            FileContent::Oversized(_) => {}
            FileContent::Bytes(_) if is_json => diagnostics.push(error(
                path,
                Pos::START,
                Rule::JsonConfig,
                "Terraform JSON configuration is not allowed; write it in HCL (`.tf`) so the policy can judge it",
            )),
            FileContent::Bytes(bytes) if is_tf => {
                if let Some(parsed) = parse(path, bytes, &mut diagnostics) {
                    modules.entry(parent(path).to_owned()).or_default().push(parsed);
                }
            }
            FileContent::Bytes(_) => {}
        }
    }
    for (dir, parsed) in &modules {
        let providers = required_providers(parsed, &policy, &mut diagnostics);
        let module = Module {
            dir,
            providers: &providers,
            policy: &policy,
        };
        for file in parsed {
            module.check_file(file, &mut diagnostics);
        }
    }
    diagnostics.sort();
    diagnostics.dedup();
    diagnostics
}

/// One parsed `.tf` file.
struct Parsed {
    path: String,
    text: String,
    body: Body,
}

fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

fn pos_at(text: &str, span: Option<Range<usize>>) -> Pos {
    span.map_or(Pos::START, |span| Pos::of_offset(text, span.start))
}

/// The deepest bracket nesting of `text` (brackets inside strings count
/// too: a cheap upper bound that keeps the parser's recursion bounded).
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    for byte in text.bytes() {
        match byte {
            b'(' | b'[' | b'{' => {
                depth = depth.saturating_add(1);
                deepest = deepest.max(depth);
            }
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn parse(path: &str, bytes: &[u8], diagnostics: &mut Vec<Diagnostic>) -> Option<Parsed> {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text,
        Err(err) => {
            let good = bytes.get(..err.valid_up_to()).unwrap_or_default();
            let pos = Pos::of_offset(&String::from_utf8_lossy(good), good.len());
            diagnostics.push(error(path, pos, Rule::Syntax, "invalid UTF-8; not judged"));
            return None;
        }
    };
    if nesting(text) > MAX_NESTING {
        diagnostics.push(error(
            path,
            Pos::START,
            Rule::Syntax,
            format!("nested deeper than {MAX_NESTING} levels; not judged"),
        ));
        return None;
    }
    match hcl_edit::parser::parse_body(text) {
        Ok(body) => Some(Parsed {
            path: path.to_owned(),
            text: text.to_owned(),
            body,
        }),
        Err(err) => {
            let location = err.location();
            let pos = Pos::new(
                u32::try_from(location.line()).unwrap_or(u32::MAX),
                u32::try_from(location.column()).unwrap_or(u32::MAX),
            );
            diagnostics.push(error(
                path,
                pos,
                Rule::Syntax,
                format!("HCL syntax error: {}; not judged", err.message()),
            ));
            None
        }
    }
}

/// The local provider names a module declares in `required_providers`
/// (name → full source), reporting sources that are not allowed.
fn required_providers(
    files: &[Parsed],
    policy: &Policy,
    diagnostics: &mut Vec<Diagnostic>,
) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for file in files {
        for block in blocks(&file.body, "terraform") {
            for required in blocks(&block.body, "required_providers") {
                for structure in &required.body {
                    let Structure::Attribute(attr) = structure else {
                        continue;
                    };
                    let name = attr.key.as_str().to_owned();
                    let pos = pos_at(&file.text, attr.value.span());
                    let source = match &attr.value {
                        Expression::Object(object) => object.iter().find_map(|(key, value)| {
                            let key = match key {
                                ObjectKey::Ident(ident) => ident.as_str().to_owned(),
                                ObjectKey::Expression(Expression::String(s)) => {
                                    s.as_str().to_owned()
                                }
                                ObjectKey::Expression(_) => return None,
                            };
                            (key == "source").then(|| match value.expr() {
                                Expression::String(s) => Some(s.as_str().to_owned()),
                                _ => None,
                            })
                        }),
                        // The legacy form `name = "version"` implies the
                        // default namespace.
                        Expression::String(_) => None,
                        _ => Some(None),
                    };
                    let source = match source {
                        None => Ok(implied_source(&name)),
                        Some(Some(text)) => normalize_source(&text),
                        Some(None) => Err(format!(
                            "the source of provider `{name}` must be a literal string"
                        )),
                    };
                    match source {
                        Ok(source) => {
                            if !policy.allows_provider(&source) {
                                diagnostics.push(error(
                                    &file.path,
                                    pos,
                                    Rule::Provider,
                                    format!(
                                        "provider `{name}` ({source}) is not allowed; allowed: {}",
                                        policy.allowed_list()
                                    ),
                                ));
                            }
                            found.insert(name, source);
                        }
                        Err(message) => {
                            diagnostics.push(error(&file.path, pos, Rule::Provider, message));
                        }
                    }
                }
            }
        }
    }
    found
}

/// The source Terraform assumes for a local name nobody declared.
fn implied_source(name: &str) -> String {
    if name == "terraform" {
        BUILTIN_PROVIDER.to_owned()
    } else {
        format!("registry.terraform.io/hashicorp/{name}")
    }
}

fn blocks<'b>(body: &'b Body, ident: &'b str) -> impl Iterator<Item = &'b Block> + 'b {
    body.iter().filter_map(move |s| match s {
        Structure::Block(block) if block.ident.as_str() == ident => Some(block),
        _ => None,
    })
}

fn attribute<'b>(body: &'b Body, key: &str) -> Option<&'b Expression> {
    body.iter().find_map(|s| match s {
        Structure::Attribute(attr) if attr.key.as_str() == key => Some(&attr.value),
        _ => None,
    })
}

/// The checks of one module folder.
struct Module<'m> {
    dir: &'m str,
    providers: &'m BTreeMap<String, String>,
    policy: &'m Policy,
}

impl Module<'_> {
    fn source_of(&self, local_name: &str) -> String {
        self.providers
            .get(local_name)
            .cloned()
            .unwrap_or_else(|| implied_source(local_name))
    }

    fn check_file(&self, file: &Parsed, diagnostics: &mut Vec<Diagnostic>) {
        let at = |span: Option<Range<usize>>| pos_at(&file.text, span);
        for structure in &file.body {
            let Structure::Block(block) = structure else {
                continue;
            };
            match block.ident.as_str() {
                "terraform" => {
                    for inner in &block.body {
                        if let Structure::Block(inner) = inner
                            && matches!(inner.ident.as_str(), "backend" | "cloud")
                        {
                            diagnostics.push(error(
                                &file.path,
                                at(inner.span()),
                                Rule::Backend,
                                format!(
                                    "a `{}` block is not allowed: the scheduler keeps the state",
                                    inner.ident.as_str()
                                ),
                            ));
                        }
                    }
                }
                "provider" => {
                    if let Some(label) = block.labels.first() {
                        let name = label.as_str();
                        self.require(
                            &file.path,
                            at(block.span()),
                            name,
                            &format!("provider block `{name}`"),
                            diagnostics,
                        );
                    }
                }
                "resource" | "data" | "ephemeral" | "action" => {
                    self.check_typed(file, block, diagnostics);
                }
                "check" => {
                    for data in blocks(&block.body, "data") {
                        self.check_typed(file, data, diagnostics);
                    }
                }
                "module" => self.check_module(file, block, diagnostics),
                _ => {}
            }
        }
        let mut calls = Calls::default();
        calls.visit_body(&file.body);
        for call in calls.found {
            self.check_call(file, &call, diagnostics);
        }
    }

    fn require(
        &self,
        path: &str,
        pos: Pos,
        local_name: &str,
        what: &str,
        diagnostics: &mut Vec<Diagnostic>,
    ) {
        let source = self.source_of(local_name);
        if !self.policy.allows_provider(&source) {
            diagnostics.push(error(
                path,
                pos,
                Rule::Provider,
                format!(
                    "{what} uses provider `{local_name}` ({source}), which is not allowed; allowed: {}",
                    self.policy.allowed_list()
                ),
            ));
        }
    }

    /// A `resource`, `data`, `ephemeral` or `action` block.
    fn check_typed(&self, file: &Parsed, block: &Block, diagnostics: &mut Vec<Diagnostic>) {
        let at = |span: Option<Range<usize>>| pos_at(&file.text, span);
        let kind = block.ident.as_str();
        let Some(type_name) = block.labels.first().map(|l| l.as_str().to_owned()) else {
            return;
        };
        let pos = at(block.span());
        if kind == "data" && type_name == "external" {
            diagnostics.push(error(
                &file.path,
                pos,
                Rule::ExternalData,
                "data source `external` runs a program on the control plane's machine; never allowed",
            ));
        } else if kind == "data" && type_name == "terraform_remote_state" {
            diagnostics.push(error(
                &file.path,
                pos,
                Rule::RemoteState,
                "data source `terraform_remote_state` reads any state file or backend; not allowed",
            ));
        }
        let local_name = match attribute(&block.body, "provider") {
            Some(Expression::Variable(name)) => name.as_str().to_owned(),
            Some(Expression::Traversal(traversal)) => match &traversal.expr {
                Expression::Variable(name) => name.as_str().to_owned(),
                _ => type_prefix(&type_name).to_owned(),
            },
            _ => type_prefix(&type_name).to_owned(),
        };
        self.require(
            &file.path,
            pos,
            &local_name,
            &format!("{kind} `{type_name}`"),
            diagnostics,
        );
        for inner in &block.body {
            let Structure::Block(inner) = inner else {
                continue;
            };
            let name = inner.ident.as_str();
            let dynamic_provisioner = name == "dynamic"
                && inner
                    .labels
                    .first()
                    .is_some_and(|l| l.as_str() == "provisioner");
            if name == "provisioner" || dynamic_provisioner {
                let which = if dynamic_provisioner {
                    "dynamic".to_owned()
                } else {
                    inner
                        .labels
                        .first()
                        .map(|l| l.as_str().to_owned())
                        .unwrap_or_default()
                };
                diagnostics.push(error(
                    &file.path,
                    at(inner.span()),
                    Rule::Provisioner,
                    format!(
                        "provisioner `{which}` in {kind} `{type_name}`: provisioners run commands on the control plane's machine; not allowed"
                    ),
                ));
            }
        }
    }

    fn check_module(&self, file: &Parsed, block: &Block, diagnostics: &mut Vec<Diagnostic>) {
        let at = |span: Option<Range<usize>>| pos_at(&file.text, span);
        let name = block
            .labels
            .first()
            .map(|l| l.as_str().to_owned())
            .unwrap_or_default();
        let Some(source) = attribute(&block.body, "source") else {
            return; // Terraform reports the missing argument itself.
        };
        let pos = at(source.span());
        let Expression::String(text) = source else {
            diagnostics.push(error(
                &file.path,
                pos,
                Rule::ModuleSource,
                format!("the source of module `{name}` must be a literal string"),
            ));
            return;
        };
        let text = text.as_str();
        if text.starts_with("./") || text.starts_with("../") {
            match resolve(self.dir, text) {
                Some(target)
                    if TERRAFORM_FOLDERS
                        .iter()
                        .any(|f| format!("{target}/").starts_with(f)) => {}
                _ => diagnostics.push(error(
                    &file.path,
                    pos,
                    Rule::ModuleSource,
                    format!(
                        "module `{name}` comes from `{text}`, outside the repository's infra/ and modules/"
                    ),
                )),
            }
        } else if !self.policy.allows_module_source(text) {
            diagnostics.push(error(
                &file.path,
                pos,
                Rule::ModuleSource,
                format!(
                    "module `{name}` comes from `{text}`, outside the repository; allow its prefix in {POLICY_FILE} (`module_sources`)"
                ),
            ));
        }
    }

    fn check_call(&self, file: &Parsed, call: &Call, diagnostics: &mut Vec<Diagnostic>) {
        let pos = pos_at(&file.text, call.span.clone());
        if let [first, provider] = call.namespace.as_slice()
            && first == "provider"
        {
            self.require(
                &file.path,
                pos,
                provider,
                &format!("function `{}`", call.name),
                diagnostics,
            );
            return;
        }
        if !call.namespace.is_empty() || !FILE_FUNCTIONS.contains(&call.name.as_str()) {
            return;
        }
        let name = &call.name;
        match &call.path {
            PathArg::None => {}
            // A path computed at run time (`file(var.x)`, `file(local.dir)`,
            // as the repository's own modules do) cannot be judged here;
            // reporting every one would bury the findings that matter.
            PathArg::Dynamic => {}
            PathArg::Literal { base, rest } => {
                let start = match base {
                    Base::None => None,
                    Base::Module => Some(self.dir.to_owned()),
                    Base::Root => Some(root_of(self.dir)),
                };
                let outside = match start {
                    None if rest.starts_with('/') || rest.starts_with('~') => true,
                    // Relative paths are relative to the root Terraform runs in.
                    None => resolve(&root_of(self.dir), rest).is_none(),
                    Some(dir) => resolve(&dir, rest.trim_start_matches('/')).is_none(),
                };
                if outside {
                    let shown = match base {
                        Base::None => rest.clone(),
                        Base::Module => format!("${{path.module}}{rest}"),
                        Base::Root => format!("${{path.root}}{rest}"),
                    };
                    diagnostics.push(error(
                        &file.path,
                        pos,
                        Rule::FilePath,
                        format!(
                            "`{name}` reads `{shown}`, outside the repository; read files of the repository only (`${{path.module}}/…`)"
                        ),
                    ));
                }
            }
        }
    }
}

/// The provider local name a resource type implies: its prefix up to the
/// first `_`.
fn type_prefix(type_name: &str) -> &str {
    type_name.split('_').next().unwrap_or(type_name)
}

/// The root folder `path.root` means for a file of `dir`: the folder
/// itself below `infra/`; for modules, a root one level below `infra/`.
fn root_of(dir: &str) -> String {
    if dir.starts_with("infra/") {
        dir.to_owned()
    } else {
        "infra/_".to_owned()
    }
}

/// `dir` joined with the relative `path`, normalised; `None` when it climbs
/// above the repository root.
fn resolve(dir: &str, path: &str) -> Option<String> {
    let mut parts: Vec<&str> = dir.split('/').filter(|p| !p.is_empty()).collect();
    for segment in path.split('/') {
        match segment {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            other => parts.push(other),
        }
    }
    Some(parts.join("/"))
}

/// Where a file function's path argument starts.
#[derive(Clone, Debug)]
enum Base {
    None,
    Module,
    Root,
}

#[derive(Clone, Debug)]
enum PathArg {
    /// No first argument.
    None,
    /// Starts with something computed.
    Dynamic,
    /// `base` then the literal text up to the first other interpolation.
    Literal { base: Base, rest: String },
}

#[derive(Clone, Debug)]
struct Call {
    namespace: Vec<String>,
    name: String,
    span: Option<Range<usize>>,
    path: PathArg,
}

/// Collects every function call of a body.
#[derive(Default)]
struct Calls {
    found: Vec<Call>,
}

fn path_base(expr: &Expression) -> Option<Base> {
    let Expression::Traversal(traversal) = expr else {
        return None;
    };
    let Expression::Variable(root) = &traversal.expr else {
        return None;
    };
    if root.as_str() != "path" {
        return None;
    }
    match traversal.operators.as_slice() {
        [op] => match op.value() {
            TraversalOperator::GetAttr(attr) => match attr.as_str() {
                "module" => Some(Base::Module),
                "root" | "cwd" => Some(Base::Root),
                _ => None,
            },
            _ => None,
        },
        _ => None,
    }
}

fn path_arg(call: &FuncCall) -> PathArg {
    let Some(first) = call.args.iter().next() else {
        return PathArg::None;
    };
    match first {
        Expression::String(text) => PathArg::Literal {
            base: Base::None,
            rest: text.as_str().to_owned(),
        },
        Expression::StringTemplate(template) => {
            let mut elements = template.iter().peekable();
            let base = match elements.peek() {
                Some(Element::Interpolation(interp)) => match path_base(&interp.expr) {
                    Some(base) => {
                        elements.next();
                        base
                    }
                    None => return PathArg::Dynamic,
                },
                Some(Element::Literal(_)) => Base::None,
                _ => return PathArg::Dynamic,
            };
            let mut rest = String::new();
            for element in elements {
                match element {
                    Element::Literal(text) => rest.push_str(text.value()),
                    _ => break,
                }
            }
            // A literal that ends inside a segment cut by an interpolation
            // (`dir/${x}`) keeps only its complete segments.
            PathArg::Literal { base, rest }
        }
        other => match path_base(other) {
            Some(base) => PathArg::Literal {
                base,
                rest: String::new(),
            },
            None => PathArg::Dynamic,
        },
    }
}

impl Visit for Calls {
    fn visit_func_call(&mut self, node: &FuncCall) {
        self.found.push(Call {
            namespace: node
                .name
                .namespace
                .iter()
                .map(|n| n.as_str().to_owned())
                .collect(),
            name: node.name.name.as_str().to_owned(),
            span: node.span(),
            path: path_arg(node),
        });
        visit_func_call(self, node);
    }
}

#[cfg(test)]
mod tests;

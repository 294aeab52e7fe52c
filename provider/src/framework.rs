//! The provider's own vocabulary for Terraform: values (known, null or
//! unknown), schemas, attribute paths, diagnostics, and the traits a
//! resource, data source and provider implement.
//!
//! This module owns the shapes the rest of the provider works with, so that
//! nothing outside [`crate::plugin`] knows which plugin library speaks the
//! wire protocol. It must not do IO or know any neutral concept; the
//! resources and data sources build on it.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;

/// One Terraform value. Objects and maps are both [`Value::Map`]; numbers
/// are whole ([`Value::Int`]) unless Terraform sent a fraction.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Value {
    #[default]
    Null,
    /// Known only after apply.
    Unknown,
    Bool(bool),
    Int(i64),
    Float(f64),
    String(String),
    List(Vec<Value>),
    Map(BTreeMap<String, Value>),
}

impl Value {
    pub fn string(text: impl Into<String>) -> Value {
        Value::String(text.into())
    }

    pub fn is_null(&self) -> bool {
        matches!(self, Value::Null)
    }

    pub fn is_unknown(&self) -> bool {
        matches!(self, Value::Unknown)
    }

    /// Whether this value or anything inside it is unknown.
    pub fn contains_unknown(&self) -> bool {
        match self {
            Value::Unknown => true,
            Value::List(items) => items.iter().any(Value::contains_unknown),
            Value::Map(entries) => entries.values().any(Value::contains_unknown),
            _ => false,
        }
    }

    /// The attribute `name` of an object; null when absent or not an object.
    pub fn get(&self, name: &str) -> &Value {
        static NULL: Value = Value::Null;
        match self {
            Value::Map(entries) => entries.get(name).unwrap_or(&NULL),
            _ => &NULL,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(text) => Some(text),
            _ => None,
        }
    }

    pub fn as_map(&self) -> Option<&BTreeMap<String, Value>> {
        match self {
            Value::Map(entries) => Some(entries),
            _ => None,
        }
    }

    pub fn as_list(&self) -> Option<&[Value]> {
        match self {
            Value::List(items) => Some(items),
            _ => None,
        }
    }

    /// Sets attribute `name` of an object (turning a non-object into one).
    pub fn set(&mut self, name: &str, value: Value) {
        if let Value::Map(entries) = self {
            entries.insert(name.to_owned(), value);
        } else {
            *self = Value::Map(BTreeMap::from([(name.to_owned(), value)]));
        }
    }
}

impl From<&str> for Value {
    fn from(text: &str) -> Value {
        Value::String(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Value {
        Value::String(text)
    }
}

impl From<u32> for Value {
    fn from(number: u32) -> Value {
        Value::Int(i64::from(number))
    }
}

impl<T: Into<Value>> From<Option<T>> for Value {
    fn from(value: Option<T>) -> Value {
        value.map_or(Value::Null, Into::into)
    }
}

/// A Terraform type.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Type {
    String,
    Number,
    Bool,
    List(Box<Type>),
    Map(Box<Type>),
    /// An object with these attribute types.
    Object(Vec<(&'static str, Type)>),
}

/// Who sets an attribute.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Constraint {
    Required,
    Optional,
    /// Optional; the provider fills it in when the configuration leaves it out.
    OptionalComputed,
    /// Set by the provider only; a configuration must not set it.
    Computed,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attribute {
    pub name: &'static str,
    pub ty: Type,
    pub constraint: Constraint,
    pub sensitive: bool,
    /// Markdown.
    pub description: &'static str,
}

impl Attribute {
    pub fn new(
        name: &'static str,
        ty: Type,
        constraint: Constraint,
        description: &'static str,
    ) -> Attribute {
        Attribute {
            name,
            ty,
            constraint,
            sensitive: false,
            description,
        }
    }

    #[must_use]
    pub fn sensitive(mut self) -> Attribute {
        self.sensitive = true;
        self
    }
}

/// A block that may appear at most once (`powerdns { … }`); it reaches the
/// provider as a list of zero or one object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NestedBlock {
    pub name: &'static str,
    pub block: Block,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Block {
    pub attributes: Vec<Attribute>,
    pub blocks: Vec<NestedBlock>,
    /// Markdown.
    pub description: &'static str,
}

impl Block {
    pub fn attribute(&self, name: &str) -> Option<&Attribute> {
        self.attributes.iter().find(|a| a.name == name)
    }

    /// Errors at every computed-only attribute the configuration sets:
    /// Terraform itself does not reject them.
    pub fn reject_computed_in_config(&self, config: &Value, diags: &mut Diags) {
        for attribute in &self.attributes {
            if attribute.constraint == Constraint::Computed && !config.get(attribute.name).is_null()
            {
                diags.error(
                    Path::attr(attribute.name),
                    format!("`{}` is computed by the provider", attribute.name),
                    "Remove it from the configuration: its value is set by the provider.",
                );
            }
        }
    }
}

/// One step of an attribute path.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    Attr(String),
    Key(String),
    Index(i64),
}

/// Where in a configuration a diagnostic points.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Path(pub Vec<Step>);

impl Path {
    pub fn root() -> Path {
        Path::default()
    }

    pub fn attr(name: &str) -> Path {
        Path(vec![Step::Attr(name.to_owned())])
    }

    #[must_use]
    pub fn key(mut self, key: &str) -> Path {
        self.0.push(Step::Key(key.to_owned()));
        self
    }

    #[must_use]
    pub fn index(mut self, index: usize) -> Path {
        self.0
            .push(Step::Index(i64::try_from(index).unwrap_or(i64::MAX)));
        self
    }

    #[must_use]
    pub fn then(mut self, name: &str) -> Path {
        self.0.push(Step::Attr(name.to_owned()));
        self
    }
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, step) in self.0.iter().enumerate() {
            match step {
                Step::Attr(name) if index == 0 => write!(f, "{name}")?,
                Step::Attr(name) => write!(f, ".{name}")?,
                Step::Key(key) => write!(f, "[{key:?}]")?,
                Step::Index(i) => write!(f, "[{i}]")?,
            }
        }
        Ok(())
    }
}

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diag {
    pub severity: Severity,
    pub path: Path,
    pub summary: String,
    pub detail: String,
}

/// Errors and warnings collected while handling one request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Diags(pub Vec<Diag>);

impl Diags {
    pub fn error(&mut self, path: Path, summary: impl Into<String>, detail: impl Into<String>) {
        self.0.push(Diag {
            severity: Severity::Error,
            path,
            summary: summary.into(),
            detail: detail.into(),
        });
    }

    pub fn warning(&mut self, path: Path, summary: impl Into<String>, detail: impl Into<String>) {
        self.0.push(Diag {
            severity: Severity::Warning,
            path,
            summary: summary.into(),
            detail: detail.into(),
        });
    }

    pub fn has_errors(&self) -> bool {
        self.0.iter().any(|d| d.severity == Severity::Error)
    }
}

/// What planning a managed resource produced.
#[derive(Clone, Debug, PartialEq)]
pub struct Planned {
    pub state: Value,
    /// Attributes whose change forces a new resource.
    pub requires_replace: Vec<Path>,
}

/// What a resource's plan reads from its arguments, for [`open_plan`].
pub trait PlanArguments {
    /// The arguments, once every one is known.
    type Spec;
    /// Attributes the plan computes: unknown while some argument is.
    const COMPUTED_LATER: &'static [&'static str];
    /// Checks the known values, each problem at its attribute.
    fn check(config: &Value, diags: &mut Diags);
    /// The state to plan: the configuration with its defaults (and what
    /// the arguments alone decide, such as the id).
    fn with_defaults(config: &Value) -> Value;
    /// The attributes whose change from `prior` replaces the resource.
    fn replacing(prior: &Value, state: &Value) -> Vec<Path>;
    /// The arguments, if all are known.
    fn spec_of(state: &Value) -> Option<Self::Spec>;
}

/// A plan opened on known arguments.
#[derive(Debug)]
pub struct Opened<'p, S> {
    pub state: Value,
    pub requires_replace: Vec<Path>,
    /// The prior state, unless the resource is replaced.
    pub prior: Option<&'p Value>,
    pub spec: S,
}

/// How a plan's shared opening ended.
#[derive(Debug)]
pub enum Opening<'p, S> {
    /// Every argument is known: the resource plans on.
    Open(Opened<'p, S>),
    /// Finished already: `None` on errors, else a plan whose computed
    /// attributes are unknown until apply.
    Done(Option<Planned>),
}

/// The opening every resource's plan shares: check the configuration, fill
/// in defaults, find what forces a replacement, and read the arguments —
/// or, while some is unknown, plan the computed attributes as unknown.
pub fn open_plan<'p, A: PlanArguments>(
    prior: Option<&'p Value>,
    config: &Value,
    diags: &mut Diags,
) -> Opening<'p, A::Spec> {
    A::check(config, diags);
    if diags.has_errors() {
        return Opening::Done(None);
    }
    let mut state = A::with_defaults(config);
    let requires_replace = prior.map(|p| A::replacing(p, &state)).unwrap_or_default();
    let prior = prior.filter(|_| requires_replace.is_empty());
    match A::spec_of(&state) {
        Some(spec) => Opening::Open(Opened {
            state,
            requires_replace,
            prior,
            spec,
        }),
        None => {
            for name in A::COMPUTED_LATER {
                state.set(name, Value::Unknown);
            }
            Opening::Done(Some(Planned {
                state,
                requires_replace,
            }))
        }
    }
}

/// A managed resource. `None` results mean "failed; see the diagnostics",
/// except for [`ResourceImpl::read`], where `Ok(None)` means "gone".
#[async_trait]
pub trait ResourceImpl: Send + Sync {
    fn schema(&self) -> Block;

    /// Checks a configuration that may still hold unknown values.
    fn validate(&self, config: &Value, diags: &mut Diags);

    /// Plans a create (`prior` is `None`) or an update.
    async fn plan(
        &self,
        prior: Option<&Value>,
        config: &Value,
        diags: &mut Diags,
    ) -> Option<Planned>;

    /// Creates or updates (`prior` is `None` for a create) to `planned`,
    /// returning the new state, which must equal every known planned value.
    async fn apply(
        &self,
        prior: Option<&Value>,
        planned: &Value,
        diags: &mut Diags,
    ) -> Option<Value>;

    async fn destroy(&self, prior: &Value, diags: &mut Diags) -> Option<()>;

    /// The resource as it is now; `Ok(None)` when it no longer exists.
    async fn read(&self, state: &Value, diags: &mut Diags) -> Result<Option<Value>, ()>;

    async fn import(&self, id: &str, diags: &mut Diags) -> Option<Value>;

    /// Runs after every read, apply, destroy and import, whatever their
    /// outcome: bookkeeping about the call that must never fail it.
    async fn after_call(&self) {}
}

/// A data source.
#[async_trait]
pub trait DataSourceImpl: Send + Sync {
    fn schema(&self) -> Block;

    fn validate(&self, config: &Value, diags: &mut Diags);

    async fn read(&self, config: &Value, diags: &mut Diags) -> Option<Value>;
}

/// The provider: its configuration block and what it offers.
#[async_trait]
pub trait ProviderImpl: Send + Sync + 'static {
    fn schema(&self) -> Block;

    fn validate(&self, config: &Value, diags: &mut Diags);

    async fn configure(&self, config: &Value, diags: &mut Diags);

    /// Resource types without the provider prefix (`gtm_record`).
    fn resources(&self) -> Vec<(&'static str, Arc<dyn ResourceImpl>)>;

    /// Data source types without the provider prefix (`region`).
    fn data_sources(&self) -> Vec<(&'static str, Arc<dyn DataSourceImpl>)>;
}

// ---- reading known values, each problem at its attribute ----

/// A whole number in `min..=max`; `None` (with a diagnostic unless the
/// value is unknown or null) otherwise.
pub fn known_int(value: &Value, path: &Path, min: u32, max: u32, diags: &mut Diags) -> Option<u32> {
    match value {
        Value::Int(number) => match u32::try_from(*number) {
            Ok(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                diags.error(
                    path.clone(),
                    "value out of range",
                    format!("{number} is outside {min}..={max}"),
                );
                None
            }
        },
        Value::Float(number) => {
            diags.error(
                path.clone(),
                "not a whole number",
                format!("{number} must be a whole number in {min}..={max}"),
            );
            None
        }
        Value::String(text) => {
            diags.error(
                path.clone(),
                "value out of range",
                format!("{text} is outside {min}..={max}"),
            );
            None
        }
        _ => None,
    }
}

/// One of `choices` by name; `None` (with a diagnostic listing the names
/// unless the value is unknown or null) otherwise.
pub fn known_choice<T: Copy>(
    value: &Value,
    path: &Path,
    choices: &[(&str, T)],
    diags: &mut Diags,
) -> Option<T> {
    let text = value.as_str()?;
    if let Some((_, choice)) = choices.iter().find(|(name, _)| *name == text) {
        return Some(*choice);
    }
    let names: Vec<&str> = choices.iter().map(|(name, _)| *name).collect();
    diags.error(
        path.clone(),
        "unsupported value",
        format!("must be one of: {}; found `{text}`", names.join(", ")),
    );
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_like_terraform_addresses() {
        let path = Path::attr("regions").key("jp");
        assert_eq!(path.to_string(), "regions[\"jp\"]");
        assert_eq!(
            Path::attr("answers").index(2).then("weight").to_string(),
            "answers[2].weight"
        );
    }

    #[test]
    fn unknown_anywhere_inside_is_found() {
        let value = Value::Map(BTreeMap::from([(
            "regions".to_owned(),
            Value::Map(BTreeMap::from([("jp".to_owned(), Value::Unknown)])),
        )]));
        assert!(value.contains_unknown());
        assert!(!value.get("regions").get("jp").is_null());
        assert!(value.get("missing").is_null());
    }

    #[test]
    fn computed_only_attributes_set_in_config_are_errors_at_their_path() {
        let block = Block {
            attributes: vec![
                Attribute::new("name", Type::String, Constraint::Required, ""),
                Attribute::new("id", Type::String, Constraint::Computed, ""),
            ],
            ..Block::default()
        };
        let mut config = Value::Map(BTreeMap::new());
        config.set("name", "x".into());
        config.set("id", "mine".into());
        let mut diags = Diags::default();
        block.reject_computed_in_config(&config, &mut diags);
        assert_eq!(diags.0.len(), 1);
        assert_eq!(diags.0[0].path, Path::attr("id"));
        assert!(diags.has_errors());
    }
}

//! The only module that knows the plugin library (`tf-provider`, Terraform
//! plugin protocol 6): it serves a [`ProviderImpl`] over gRPC, translating
//! schemas, values and diagnostics between the library's types and
//! [`crate::framework`]'s. Replacing the library means rewriting this file
//! only.
//!
//! Values cross as msgpack (JSON for upgraded state); an unknown value is a
//! msgpack extension, which this module reads as [`Value::Unknown`] whatever
//! its type code (Terraform ≥ 1.6 sends refined unknowns as code 12) and
//! writes with code 0. Every value sent back is first conformed to the
//! schema: exactly the declared attributes, nested blocks as lists.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::sync::Arc;

use async_trait::async_trait;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, Serializer};
use serde::{Deserialize, Serialize};
use tf_provider::schema::{
    Attribute as TfAttribute, AttributeConstraint, AttributeType, Block as TfBlock, Description,
    NestedBlock as TfNestedBlock, Schema,
};
use tf_provider::{
    AttributePath, DataSource, Diagnostic, Diagnostics, DynamicDataSource, DynamicResource,
    Provider, Resource,
};

use crate::framework::{
    Block, Constraint, DataSourceImpl, Diags, Path, ProviderImpl, ResourceImpl, Severity, Step,
    Type, Value,
};

/// Serves `provider` as `name` until Terraform shuts the plugin down.
pub async fn serve(name: &str, provider: Arc<dyn ProviderImpl>) -> anyhow::Result<()> {
    tf_provider::serve(name, ProviderAdapter(provider)).await
}

/// The handshake cookie Terraform sets for its plugins; run without it,
/// the binary explains itself instead of waiting for a handshake.
pub const MAGIC_COOKIE_KEY: &str = "TF_PLUGIN_MAGIC_COOKIE";
pub const MAGIC_COOKIE_VALUE: &str =
    "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2";

/// A [`Value`] on the wire.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Wire(pub Value);

/// The extension struct name `rmp-serde` maps to a msgpack extension.
const EXT_STRUCT: &str = "_ExtStruct";

struct EmptyBytes;

impl Serialize for EmptyBytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(&[])
    }
}

impl Serialize for Wire {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_value(&self.0, serializer)
    }
}

fn serialize_value<S: Serializer>(value: &Value, serializer: S) -> Result<S::Ok, S::Error> {
    match value {
        Value::Null => serializer.serialize_unit(),
        Value::Unknown => serializer.serialize_newtype_struct(EXT_STRUCT, &(0i8, EmptyBytes)),
        Value::Bool(b) => serializer.serialize_bool(*b),
        Value::Int(i) => serializer.serialize_i64(*i),
        Value::Float(f) => serializer.serialize_f64(*f),
        Value::String(s) => serializer.serialize_str(s),
        Value::List(items) => {
            let mut seq = serializer.serialize_seq(Some(items.len()))?;
            for item in items {
                seq.serialize_element(&WireRef(item))?;
            }
            seq.end()
        }
        Value::Map(entries) => {
            let mut map = serializer.serialize_map(Some(entries.len()))?;
            for (key, item) in entries {
                map.serialize_entry(key, &WireRef(item))?;
            }
            map.end()
        }
    }
}

struct WireRef<'v>(&'v Value);

impl Serialize for WireRef<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serialize_value(self.0, serializer)
    }
}

impl<'de> Deserialize<'de> for Wire {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(WireVisitor).map(Wire)
    }
}

struct WireVisitor;

impl<'de> Visitor<'de> for WireVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a Terraform value")
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(WireVisitor)
    }

    fn visit_bool<E>(self, b: bool) -> Result<Value, E> {
        Ok(Value::Bool(b))
    }

    fn visit_i64<E>(self, i: i64) -> Result<Value, E> {
        Ok(Value::Int(i))
    }

    fn visit_u64<E>(self, u: u64) -> Result<Value, E> {
        Ok(i64::try_from(u).map_or(Value::Float(u as f64), Value::Int))
    }

    fn visit_f64<E>(self, f: f64) -> Result<Value, E> {
        Ok(Value::Float(f))
    }

    fn visit_str<E>(self, s: &str) -> Result<Value, E> {
        Ok(Value::String(s.to_owned()))
    }

    fn visit_string<E>(self, s: String) -> Result<Value, E> {
        Ok(Value::String(s))
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Value, E> {
        String::from_utf8(bytes.to_vec())
            .map(Value::String)
            .map_err(|_| E::custom("binary data where a Terraform value was expected"))
    }

    /// `rmp-serde` hands a msgpack extension over as a newtype struct:
    /// Terraform's unknown value.
    fn visit_newtype_struct<D: Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Value, D::Error> {
        de::IgnoredAny::deserialize(deserializer)?;
        Ok(Value::Unknown)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024));
        while let Some(Wire(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::List(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut entries = BTreeMap::new();
        while let Some((key, Wire(item))) = map.next_entry::<String, Wire>()? {
            entries.insert(key, item);
        }
        Ok(Value::Map(entries))
    }
}

// ---- schemas ----

fn attribute_type(ty: &Type) -> AttributeType {
    match ty {
        Type::String => AttributeType::String,
        Type::Number => AttributeType::Number,
        Type::Bool => AttributeType::Bool,
        Type::List(inner) => AttributeType::List(Box::new(attribute_type(inner))),
        Type::Map(inner) => AttributeType::Map(Box::new(attribute_type(inner))),
        Type::Object(fields) => AttributeType::Object(
            fields
                .iter()
                .map(|(name, ty)| ((*name).to_owned(), attribute_type(ty)))
                .collect(),
        ),
    }
}

fn tf_block(block: &Block) -> TfBlock {
    TfBlock {
        version: 0,
        attributes: block
            .attributes
            .iter()
            .map(|a| {
                (
                    a.name.to_owned(),
                    TfAttribute {
                        attr_type: attribute_type(&a.ty),
                        description: Description::markdown(a.description),
                        constraint: match a.constraint {
                            Constraint::Required => AttributeConstraint::Required,
                            Constraint::Optional => AttributeConstraint::Optional,
                            Constraint::OptionalComputed => AttributeConstraint::OptionalComputed,
                            Constraint::Computed => AttributeConstraint::Computed,
                        },
                        sensitive: a.sensitive,
                        deprecated: false,
                    },
                )
            })
            .collect(),
        blocks: block
            .blocks
            .iter()
            .map(|b| {
                (
                    b.name.to_owned(),
                    TfNestedBlock::Optional(tf_block(&b.block)),
                )
            })
            .collect(),
        description: Description::markdown(block.description),
        deprecated: false,
    }
}

fn tf_schema(block: &Block) -> Schema {
    Schema {
        version: 0,
        block: tf_block(block),
    }
}

/// `value` with exactly `block`'s attributes (missing ones null) and its
/// nested blocks as lists.
pub fn conform_to_block(value: &Value, block: &Block) -> Value {
    if value.is_unknown() {
        return Value::Unknown;
    }
    let mut entries = BTreeMap::new();
    for attribute in &block.attributes {
        entries.insert(
            attribute.name.to_owned(),
            conform_to_type(value.get(attribute.name), &attribute.ty),
        );
    }
    for nested in &block.blocks {
        let items = match value.get(nested.name) {
            Value::List(items) => items
                .iter()
                .map(|item| conform_to_block(item, &nested.block))
                .collect(),
            Value::Map(_) => vec![conform_to_block(value.get(nested.name), &nested.block)],
            _ => Vec::new(),
        };
        entries.insert(nested.name.to_owned(), Value::List(items));
    }
    Value::Map(entries)
}

fn conform_to_type(value: &Value, ty: &Type) -> Value {
    match (value, ty) {
        (Value::Null | Value::Unknown, _) => value.clone(),
        (Value::List(items), Type::List(inner)) => {
            Value::List(items.iter().map(|i| conform_to_type(i, inner)).collect())
        }
        (Value::Map(entries), Type::Map(inner)) => Value::Map(
            entries
                .iter()
                .map(|(k, v)| (k.clone(), conform_to_type(v, inner)))
                .collect(),
        ),
        (Value::Map(_), Type::Object(fields)) => Value::Map(
            fields
                .iter()
                .map(|(name, ty)| ((*name).to_owned(), conform_to_type(value.get(name), ty)))
                .collect(),
        ),
        _ => value.clone(),
    }
}

// ---- diagnostics ----

fn attribute_path(path: &Path) -> AttributePath {
    let mut out = AttributePath::root();
    for step in &path.0 {
        match step {
            Step::Attr(name) => out.add_attribute(name.clone()),
            Step::Key(key) => out.add_key(key.clone()),
            Step::Index(index) => out.add_index(*index),
        };
    }
    out
}

fn report(diags: Diags, out: &mut Diagnostics) {
    for diag in diags.0 {
        // Built by hand: `Diagnostic::new` appends a backtrace to the detail
        // whenever RUST_BACKTRACE is set, which no user should read.
        let converted = Diagnostic {
            summary: diag.summary.into(),
            detail: diag.detail.into(),
            attribute: attribute_path(&diag.path),
        };
        match diag.severity {
            Severity::Error => out.add_error(converted),
            Severity::Warning => out.add_warning(converted),
        }
    }
}

/// Reports `diags`, adding an error when `result` failed without saying why.
fn finish<T>(diags: Diags, out: &mut Diagnostics, result: Option<T>) -> Option<T> {
    let failed_silently = result.is_none() && !diags.has_errors();
    report(diags, out);
    if failed_silently {
        out.root_error_short("the provider failed without a diagnostic (a bug)");
    }
    result
}

// ---- the provider ----

struct ProviderAdapter(Arc<dyn ProviderImpl>);

#[async_trait]
impl Provider for ProviderAdapter {
    type Config<'a> = Wire;
    type MetaState<'a> = Wire;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(tf_schema(&self.0.schema()))
    }

    async fn validate<'a>(&self, out: &mut Diagnostics, config: Wire) -> Option<()> {
        let mut diags = Diags::default();
        self.0.validate(&config.0, &mut diags);
        report(diags, out);
        Some(())
    }

    async fn configure<'a>(
        &self,
        out: &mut Diagnostics,
        _terraform_version: String,
        config: Wire,
    ) -> Option<()> {
        let _span = crate::timing::Span::new("configure");
        let mut diags = Diags::default();
        self.0.configure(&config.0, &mut diags).await;
        report(diags, out);
        Some(())
    }

    fn get_resources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        Some(
            self.0
                .resources()
                .into_iter()
                .map(|(name, resource)| {
                    let schema = resource.schema();
                    let boxed: Box<dyn DynamicResource> =
                        Box::new(ResourceAdapter { resource, schema });
                    (name.to_owned(), boxed)
                })
                .collect(),
        )
    }

    fn get_data_sources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicDataSource>>> {
        Some(
            self.0
                .data_sources()
                .into_iter()
                .map(|(name, source)| {
                    let schema = source.schema();
                    let boxed: Box<dyn DynamicDataSource> =
                        Box::new(DataSourceAdapter { source, schema });
                    (name.to_owned(), boxed)
                })
                .collect(),
        )
    }
}

struct ResourceAdapter {
    resource: Arc<dyn ResourceImpl>,
    schema: Block,
}

impl ResourceAdapter {
    fn out(&self, value: &Value) -> Wire {
        Wire(conform_to_block(value, &self.schema))
    }
}

#[async_trait]
impl Resource for ResourceAdapter {
    type State<'a> = Wire;
    type PrivateState<'a> = Wire;
    type ProviderMetaState<'a> = Wire;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(tf_schema(&self.schema))
    }

    async fn validate<'a>(&self, out: &mut Diagnostics, config: Wire) -> Option<()> {
        let mut diags = Diags::default();
        self.resource.validate(&config.0, &mut diags);
        report(diags, out);
        Some(())
    }

    async fn read<'a>(
        &self,
        out: &mut Diagnostics,
        state: Wire,
        private: Wire,
        _meta: Wire,
    ) -> Option<(Wire, Wire)> {
        let _span = crate::timing::Span::new("read");
        let mut diags = Diags::default();
        let result = self.resource.read(&state.0, &mut diags).await;
        self.resource.after_call().await;
        report(diags, out);
        match result {
            Ok(Some(new_state)) => Some((self.out(&new_state), private)),
            // Gone: Terraform plans to create it again.
            Ok(None) => None,
            // Failed: keep the state as it was; the error stops the run.
            Err(()) => Some((state, private)),
        }
    }

    async fn plan_create<'a>(
        &self,
        out: &mut Diagnostics,
        _proposed: Wire,
        config: Wire,
        _meta: Wire,
    ) -> Option<(Wire, Wire)> {
        let _span = crate::timing::Span::new("plan");
        let mut diags = Diags::default();
        let result = self.resource.plan(None, &config.0, &mut diags).await;
        let planned = finish(diags, out, result)?;
        Some((self.out(&planned.state), Wire::default()))
    }

    async fn plan_update<'a>(
        &self,
        out: &mut Diagnostics,
        prior: Wire,
        _proposed: Wire,
        config: Wire,
        _prior_private: Wire,
        _meta: Wire,
    ) -> Option<(Wire, Wire, Vec<AttributePath>)> {
        let _span = crate::timing::Span::new("plan");
        let mut diags = Diags::default();
        let result = self
            .resource
            .plan(Some(&prior.0), &config.0, &mut diags)
            .await;
        let planned = finish(diags, out, result)?;
        let replace = planned
            .requires_replace
            .iter()
            .map(attribute_path)
            .collect();
        Some((self.out(&planned.state), Wire::default(), replace))
    }

    async fn plan_destroy<'a>(
        &self,
        _out: &mut Diagnostics,
        _prior: Wire,
        _prior_private: Wire,
        _meta: Wire,
    ) -> Option<Wire> {
        Some(Wire::default())
    }

    async fn create<'a>(
        &self,
        out: &mut Diagnostics,
        planned: Wire,
        _config: Wire,
        _private: Wire,
        _meta: Wire,
    ) -> Option<(Wire, Wire)> {
        let _span = crate::timing::Span::new("apply");
        let mut diags = Diags::default();
        let result = self.resource.apply(None, &planned.0, &mut diags).await;
        self.resource.after_call().await;
        let state = finish(diags, out, result)?;
        Some((self.out(&state), Wire::default()))
    }

    async fn update<'a>(
        &self,
        out: &mut Diagnostics,
        prior: Wire,
        planned: Wire,
        _config: Wire,
        _private: Wire,
        _meta: Wire,
    ) -> Option<(Wire, Wire)> {
        let _span = crate::timing::Span::new("apply");
        let mut diags = Diags::default();
        let result = self
            .resource
            .apply(Some(&prior.0), &planned.0, &mut diags)
            .await;
        self.resource.after_call().await;
        let state = finish(diags, out, result)?;
        Some((self.out(&state), Wire::default()))
    }

    async fn destroy<'a>(
        &self,
        out: &mut Diagnostics,
        prior: Wire,
        _private: Wire,
        _meta: Wire,
    ) -> Option<()> {
        let _span = crate::timing::Span::new("destroy");
        let mut diags = Diags::default();
        let result = self.resource.destroy(&prior.0, &mut diags).await;
        self.resource.after_call().await;
        finish(diags, out, result)
    }

    async fn import<'a>(&self, out: &mut Diagnostics, id: String) -> Option<(Wire, Wire)> {
        let _span = crate::timing::Span::new("import");
        let mut diags = Diags::default();
        let result = self.resource.import(&id, &mut diags).await;
        self.resource.after_call().await;
        let state = finish(diags, out, result)?;
        Some((self.out(&state), Wire::default()))
    }
}

struct DataSourceAdapter {
    source: Arc<dyn DataSourceImpl>,
    schema: Block,
}

#[async_trait]
impl DataSource for DataSourceAdapter {
    type State<'a> = Wire;
    type ProviderMetaState<'a> = Wire;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(tf_schema(&self.schema))
    }

    async fn validate<'a>(&self, out: &mut Diagnostics, config: Wire) -> Option<()> {
        let mut diags = Diags::default();
        self.source.validate(&config.0, &mut diags);
        report(diags, out);
        Some(())
    }

    async fn read<'a>(&self, out: &mut Diagnostics, config: Wire, _meta: Wire) -> Option<Wire> {
        let _span = crate::timing::Span::new("read_data");
        let mut diags = Diags::default();
        let result = self.source.read(&config.0, &mut diags).await;
        let state = finish(diags, out, result)?;
        Some(Wire(conform_to_block(&state, &self.schema)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framework::{Attribute, NestedBlock};

    fn round_trip(value: &Value) -> Value {
        let bytes = rmp_serde::to_vec_named(&Wire(value.clone())).expect("encode");
        rmp_serde::from_slice::<Wire>(&bytes).expect("decode").0
    }

    #[test]
    fn values_survive_msgpack_including_unknowns() {
        let mut value = Value::Map(BTreeMap::new());
        value.set("name", "app".into());
        value.set("ttl", Value::Int(30));
        value.set("ratio", Value::Float(0.5));
        value.set("flag", Value::Bool(true));
        value.set("gone", Value::Null);
        value.set("later", Value::Unknown);
        value.set(
            "list",
            Value::List(vec![Value::Int(-1), Value::Unknown, "x".into()]),
        );
        assert_eq!(round_trip(&value), value);
    }

    #[test]
    fn any_extension_type_reads_as_unknown() {
        // fixext1, type 12 (a refined unknown from Terraform >= 1.6), one byte.
        let bytes = [0x81, 0xa1, b'x', 0xd4, 0x0c, 0x00];
        let Wire(value) = rmp_serde::from_slice(&bytes).expect("decode");
        assert_eq!(value.get("x"), &Value::Unknown);
    }

    #[test]
    fn conforming_keeps_exactly_the_schema_attributes() {
        let block = Block {
            attributes: vec![
                Attribute::new("a", Type::String, Constraint::Required, ""),
                Attribute::new(
                    "objects",
                    Type::List(Box::new(Type::Object(vec![("k", Type::String)]))),
                    Constraint::Computed,
                    "",
                ),
            ],
            blocks: vec![NestedBlock {
                name: "inner",
                block: Block::default(),
            }],
            description: "",
        };
        let mut value = Value::Map(BTreeMap::new());
        value.set("a", "x".into());
        value.set("extra", "dropped".into());
        let mut object = Value::Map(BTreeMap::new());
        object.set("k", "v".into());
        object.set("junk", Value::Int(1));
        value.set("objects", Value::List(vec![object]));
        let conformed = conform_to_block(&value, &block);
        let keys: Vec<&String> = conformed.as_map().expect("object").keys().collect();
        assert_eq!(keys, ["a", "inner", "objects"]);
        assert_eq!(conformed.get("inner"), &Value::List(Vec::new()));
        let first = &conformed.get("objects").as_list().expect("list")[0];
        assert_eq!(first.as_map().expect("object").len(), 1);
    }

    #[test]
    fn paths_become_protocol_paths() {
        let path = attribute_path(&Path::attr("regions").key("jp"));
        assert_eq!(
            path.to_string(),
            AttributePath::new("regions").key("jp").to_string()
        );
    }
}

//! The JSON Schema layer: the embedded draft-07 schema (our own description
//! of llama-swap's configuration, `schema/llama-swap.schema.json`) or a
//! user's `--schema`, checked against the expanded config with formats
//! asserted. Every error is reported, mapped back to its YAML position.

use serde_json::Value;

use super::{Report, Seg};

const EMBEDDED: &str = include_str!("../../schema/llama-swap.schema.json");
/// Largest `--schema` file accepted.
const MAX_SCHEMA: u64 = 4 * 1024 * 1024;

/// A compiled schema.
pub struct Schema {
    validator: jsonschema::Validator,
    /// The schema of one model, when the schema checks each model on its
    /// own (see [`model_part`]): models are then checked one at a time.
    model: Option<jsonschema::Validator>,
}

/// Root keywords that never look inside `models` beyond `properties.models`
/// and whose messages do not print the root (`minProperties` would).
const ROOT_SPLITS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    "description",
    "type",
    "properties",
    "required",
    "additionalProperties",
    "definitions",
];
/// Keywords of `properties.models` that leave each model to its own schema.
const MODELS_SPLITS: &[&str] = &[
    "$comment",
    "title",
    "description",
    "type",
    "additionalProperties",
];

/// The schema every model is checked against, when `schema` checks each
/// model on its own and nothing else looks into `models`: then the errors
/// of the whole config are those of the top level (with `models` empty)
/// plus those of each model.
fn model_part(schema: &Value) -> Option<&Value> {
    let root = schema.as_object()?;
    if !root.keys().all(|k| ROOT_SPLITS.contains(&k.as_str())) {
        return None;
    }
    let models = root.get("properties")?.get("models")?.as_object()?;
    if !models.keys().all(|k| MODELS_SPLITS.contains(&k.as_str())) {
        return None;
    }
    let object = match models.get("type") {
        Some(Value::String(t)) => t == "object",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "object"),
        _ => false,
    };
    let model = models.get("additionalProperties")?;
    (object && model.is_object() && !refers(model)).then_some(model)
}

/// Whether a schema holds a reference or an identifier (its meaning would
/// then depend on where it sits).
fn refers(v: &Value) -> bool {
    match v {
        Value::Object(m) => m
            .iter()
            .any(|(k, v)| k.starts_with("$ref") || k == "$id" || k.ends_with("Ref") || refers(v)),
        Value::Array(items) => items.iter().any(refers),
        _ => false,
    }
}

fn compile_split(schema: &Value) -> Result<Schema, String> {
    let validator = compile(schema)?;
    let model = match model_part(schema) {
        Some(part) => Some(compile(part)?),
        None => None,
    };
    Ok(Schema { validator, model })
}

fn compile(schema: &Value) -> Result<jsonschema::Validator, String> {
    jsonschema::options()
        .with_draft(jsonschema::Draft::Draft7)
        .should_validate_formats(true)
        .build(schema)
        .map_err(|e| format!("invalid JSON Schema: {e}"))
}

impl Schema {
    /// The embedded schema (a constant, checked by the test suite).
    pub fn embedded() -> Schema {
        let value: Value = serde_json::from_str(EMBEDDED).expect("embedded schema is valid JSON");
        compile_split(&value).expect("embedded schema compiles")
    }

    /// Load a user's schema file.
    pub fn from_file(path: &std::path::Path) -> Result<Schema, String> {
        // Bounded by bytes read; devices and FIFOs refused by type.
        let bytes = crate::local::read_bounded(path, MAX_SCHEMA)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let text =
            String::from_utf8(bytes).map_err(|_| format!("{}: not UTF-8", path.display()))?;
        let value: Value = serde_json::from_str(&text)
            .map_err(|e| format!("{}: not JSON: {e}", path.display()))?;
        compile_split(&value).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Report every schema error of `config` (the expanded config).
    pub fn check(&self, config: &Value, report: &mut Report) {
        errors(&self.validator, config, Vec::new(), report);
    }

    /// Whether models can be checked one at a time ([`Schema::check_model`];
    /// [`Schema::check`] then checks the rest, with `models` empty).
    pub(crate) fn splits(&self) -> bool {
        self.model.is_some()
    }

    /// Report the schema errors of one expanded model.
    pub(crate) fn check_model(&self, id: &str, model: &Value, report: &mut Report) {
        if let Some(v) = &self.model {
            let at = vec![Seg::Key("models".into()), Seg::Key(id.into())];
            errors(v, model, at, report);
        }
    }
}

/// Report the errors of `validator` on `instance`, found at `at`.
fn errors(validator: &jsonschema::Validator, instance: &Value, at: Vec<Seg>, report: &mut Report) {
    for err in validator.iter_errors(instance) {
        let pointer = err.instance_path().as_str().to_string();
        let mut path = at.clone();
        path.extend(segments(instance, &pointer));
        // `${env.NAME}` stays unresolved: its type is only known on the host.
        if instance
            .pointer(&pointer)
            .and_then(Value::as_str)
            .is_some_and(|s| s.contains("${env."))
        {
            continue;
        }
        report.error(&path, "schema", err.to_string());
    }
}

/// JSON pointer to path segments (array indexes where the value is a list).
fn segments(root: &Value, pointer: &str) -> Vec<Seg> {
    let mut out = Vec::new();
    let mut cur = Some(root);
    for raw in pointer.split('/').skip(1) {
        let key = raw.replace("~1", "/").replace("~0", "~");
        match cur {
            Some(Value::Array(items)) => {
                let i = key.parse::<usize>().unwrap_or(0);
                cur = items.get(i);
                out.push(Seg::Index(i));
            }
            Some(Value::Object(m)) => {
                cur = m.get(&key);
                out.push(Seg::Key(key));
            }
            _ => {
                cur = None;
                out.push(Seg::Key(key));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn models_are_checked_one_at_a_time_only_when_nothing_else_looks_inside() {
        assert!(Schema::embedded().splits(), "the embedded schema splits");
        let model =
            serde_json::json!({"type": "object", "properties": {"ttl": {"type": "integer"}}});
        let with = |root: Value| model_part(&root).is_some();
        let models = serde_json::json!({"type": ["object", "null"], "additionalProperties": model});
        assert!(with(
            serde_json::json!({"type": "object", "properties": {"models": models}})
        ));
        // Anything that could read the models beyond their own schema.
        for root in [
            serde_json::json!({"properties": {"models": models}, "allOf": [{}]}),
            serde_json::json!({"properties": {"models": models}, "patternProperties": {"^m": {}}}),
            serde_json::json!({"properties": {"models": {"type": "object", "additionalProperties": model, "required": ["a"]}}}),
            serde_json::json!({"properties": {"models": {"type": "array", "additionalProperties": model}}}),
            serde_json::json!({"properties": {"models": {"type": "object", "additionalProperties": {"$ref": "#/definitions/m"}}}}),
            serde_json::json!({"properties": {"models": {"type": "object", "additionalProperties": false}}}),
            serde_json::json!({"properties": {}}),
            serde_json::json!({"properties": {"models": models}, "maxProperties": 3}),
        ] {
            assert!(!with(root.clone()), "{root}");
        }
    }
}

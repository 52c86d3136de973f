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
        Schema {
            validator: compile(&value).expect("embedded schema compiles"),
        }
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
        Ok(Schema {
            validator: compile(&value).map_err(|e| format!("{}: {e}", path.display()))?,
        })
    }

    /// Report every schema error of `config` (the expanded config).
    pub fn check(&self, config: &Value, report: &mut Report) {
        for err in self.validator.iter_errors(config) {
            let pointer = err.instance_path().as_str().to_string();
            let path = segments(config, &pointer);
            // `${env.NAME}` stays unresolved: its type is only known on the host.
            if config
                .pointer(&pointer)
                .and_then(Value::as_str)
                .is_some_and(|s| s.contains("${env."))
            {
                continue;
            }
            report.error(&path, "schema", err.to_string());
        }
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

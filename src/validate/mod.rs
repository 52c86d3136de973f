//! Validation of a llama-swap config, with no network access.
//!
//! Owns: the YAML layer (positions, anchors, merge keys, duplicate keys,
//! bounds), the JSON Schema layer (embedded draft-07 schema or `--schema`),
//! the semantic layer (llama-swap loader rules), and mapping every finding
//! back to the original `line:column`.

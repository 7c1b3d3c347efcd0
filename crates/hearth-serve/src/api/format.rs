//! Structured-output requests: OpenAI's `response_format` and Ollama's
//! `format`, turned into a [`ConstraintSpec`] for the runtime.
//!
//! This module owns the accepted shapes and their errors. Every spec is
//! compiled once here (on a byte vocabulary, no model needed), so a schema
//! the constraint engine cannot handle is a 400 naming the feature before
//! any model loads or any work is queued — never unconstrained output.

use hearth_runtime::ConstraintSpec;
use serde_json::Value;

use super::error::ApiError;

fn checked(field: &str, spec: ConstraintSpec) -> Result<Option<ConstraintSpec>, ApiError> {
    spec.check().map_err(|e| {
        ApiError::field(
            field,
            format!("{field}: the schema cannot be used for constrained output: {e}"),
        )
    })?;
    Ok(Some(spec))
}

/// OpenAI's `response_format`: `{"type": "text"}` (no constraint),
/// `{"type": "json_object"}` (any JSON object) or `{"type": "json_schema",
/// "json_schema": {"name": …, "schema": {…}, "strict": …}}`. `strict` may
/// be true or false: the output is held to the schema either way.
pub fn response_format(rf: &Option<Value>) -> Result<Option<ConstraintSpec>, ApiError> {
    let Some(rf) = rf else { return Ok(None) };
    if rf.is_null() {
        return Ok(None);
    }
    let Some(obj) = rf.as_object() else {
        return Err(ApiError::field(
            "response_format",
            "response_format must be an object with a `type`",
        ));
    };
    let kind = obj.get("type").and_then(Value::as_str).ok_or_else(|| {
        ApiError::field(
            "response_format.type",
            "response_format.type is required: \"text\", \"json_object\" or \"json_schema\"",
        )
    })?;
    match kind {
        "text" => Ok(None),
        "json_object" => checked("response_format", ConstraintSpec::JsonObject),
        "json_schema" => {
            let js = obj.get("json_schema").and_then(Value::as_object).ok_or_else(|| {
                ApiError::field(
                    "response_format.json_schema",
                    "response_format.json_schema must be an object with `name` and `schema`",
                )
            })?;
            match js.get("name") {
                Some(Value::String(n)) if !n.is_empty() => {}
                _ => {
                    return Err(ApiError::field(
                        "response_format.json_schema.name",
                        "response_format.json_schema.name is required (a non-empty string)",
                    ))
                }
            }
            if let Some(s) = js.get("strict") {
                if !s.is_boolean() && !s.is_null() {
                    return Err(ApiError::field(
                        "response_format.json_schema.strict",
                        "response_format.json_schema.strict must be a boolean",
                    ));
                }
            }
            // OpenAI lets `schema` be left out, meaning any JSON value.
            let schema = js.get("schema").cloned().unwrap_or(Value::Bool(true));
            if !schema.is_object() && schema != Value::Bool(true) {
                return Err(ApiError::field(
                    "response_format.json_schema.schema",
                    "response_format.json_schema.schema must be a JSON schema object",
                ));
            }
            checked(
                "response_format.json_schema.schema",
                ConstraintSpec::JsonSchema(schema),
            )
        }
        other => Err(ApiError::field(
            "response_format.type",
            format!(
                "unknown response_format.type {other:?}: use \"text\", \"json_object\" or \"json_schema\""
            ),
        )),
    }
}

/// Ollama's `format`: `"json"` (any JSON object, as Ollama means it), a
/// JSON schema object, or `""`/absent for none.
pub fn ollama_format(format: &Option<Value>) -> Result<Option<ConstraintSpec>, ApiError> {
    match format {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => checked("format", ConstraintSpec::JsonObject),
        Some(Value::String(s)) => Err(ApiError::field(
            "format",
            format!("unknown format {s:?}: use \"json\" or a JSON schema object"),
        )),
        Some(v @ Value::Object(_)) => checked("format", ConstraintSpec::JsonSchema(v.clone())),
        Some(_) => Err(ApiError::field(
            "format",
            "format must be \"json\" or a JSON schema object",
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_shapes() {
        assert_eq!(response_format(&None).unwrap(), None);
        assert_eq!(
            response_format(&Some(json!({"type": "text"}))).unwrap(),
            None
        );
        assert_eq!(
            response_format(&Some(json!({"type": "json_object"}))).unwrap(),
            Some(ConstraintSpec::JsonObject)
        );
        let s = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
        assert_eq!(
            response_format(&Some(json!({"type": "json_schema",
                "json_schema": {"name": "x", "schema": s, "strict": true}})))
            .unwrap(),
            Some(ConstraintSpec::JsonSchema(s))
        );
    }

    #[test]
    fn openai_errors_name_the_field() {
        let cases = [
            (json!("json"), "response_format"),
            (json!({}), "response_format.type"),
            (json!({"type": "yaml"}), "response_format.type"),
            (
                json!({"type": "json_schema"}),
                "response_format.json_schema",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"schema": {}}}),
                "response_format.json_schema.name",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"name": "x", "schema": 3}}),
                "response_format.json_schema.schema",
            ),
            (
                json!({"type": "json_schema", "json_schema": {"name": "x", "strict": "yes"}}),
                "response_format.json_schema.strict",
            ),
        ];
        for (v, field) in cases {
            let e = response_format(&Some(v.clone())).unwrap_err();
            assert_eq!(e.param.as_deref(), Some(field), "{v}: {}", e.message);
            assert_eq!(e.status.as_u16(), 400);
        }
        let e = response_format(&Some(json!({"type": "json_schema", "json_schema": {
            "name": "x", "schema": {"type": "object", "dependentSchemas": {"a": {}}}}})))
        .unwrap_err();
        assert!(e.message.contains("dependentSchemas"), "{}", e.message);
    }

    #[test]
    fn ollama_shapes() {
        assert_eq!(ollama_format(&None).unwrap(), None);
        assert_eq!(ollama_format(&Some(json!(""))).unwrap(), None);
        assert_eq!(
            ollama_format(&Some(json!("json"))).unwrap(),
            Some(ConstraintSpec::JsonObject)
        );
        assert!(ollama_format(&Some(json!({"type": "array"})))
            .unwrap()
            .is_some());
        assert!(ollama_format(&Some(json!("xml"))).is_err());
        assert!(ollama_format(&Some(json!(7))).is_err());
        let e = ollama_format(&Some(json!({"type": "string", "format": "ipv9"}))).unwrap_err();
        assert!(e.message.contains("ipv9"), "{}", e.message);
    }
}

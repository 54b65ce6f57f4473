//! JSON Schema (draft 2020-12) of the app format, generated from the function
//! registry so editors can check apps as they are typed.

use crate::functions::{ParamType, FUNCTIONS};
use serde_json::{json, Map, Value};

fn param_schema(ty: ParamType, doc: &str) -> Value {
    let mut s = match ty {
        ParamType::PositiveInt => json!({"type": "integer", "minimum": 1}),
        ParamType::Count => json!({"type": "integer", "minimum": 0}),
        ParamType::NonNegative => json!({"type": "number", "minimum": 0}),
        ParamType::Text | ParamType::Path | ParamType::PathOrUrl => {
            json!({"type": "string", "minLength": 1})
        }
        ParamType::OneOf(options) => json!({"enum": options}),
        ParamType::TextList => json!({"type": "array", "items": {"type": "string"}, "minItems": 1}),
        ParamType::TextOrList => json!({"oneOf": [
            {"type": "string"},
            {"type": "array", "items": {"type": "string"}, "minItems": 1}
        ]}),
        ParamType::Bool => json!({"type": "boolean"}),
    };
    s["description"] = Value::String(doc.to_string());
    s
}

/// The schema as a JSON value.
pub fn app_schema() -> Value {
    let non_neg = json!({"type": "number", "minimum": 0});
    let per_function: Vec<Value> = FUNCTIONS
        .iter()
        .map(|f| {
            let mut props = Map::new();
            for p in f.params {
                props.insert(p.name.to_string(), param_schema(p.ty, p.doc));
            }
            let required: Vec<&str> = f
                .params
                .iter()
                .filter(|p| p.required)
                .map(|p| p.name)
                .collect();
            let kinds: Vec<String> = f.kinds.iter().map(|k| k.to_string()).collect();
            json!({
                "if": {"properties": {"function": {"const": f.name}}, "required": ["function"]},
                "then": {
                    "properties": {
                        "kind": {"enum": kinds},
                        "params": {
                            "type": "object",
                            "properties": props,
                            "required": required,
                            "additionalProperties": false
                        }
                    }
                }
            })
        })
        .collect();
    let names: Vec<&str> = FUNCTIONS.iter().map(|f| f.name).collect();
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "SmartPipe app",
        "type": "object",
        "required": ["name", "tasks"],
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"},
            "service_type": {"enum": ["request-guarantee", "best-effort"], "default": "best-effort"},
            "strategy": {"enum": ["lazy", "balance", "strong"], "default": "balance"},
            "request_frequency": {"type": "number", "minimum": 0, "description": "items per second offered by the sources"},
            "quota": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "throughput_per_min": non_neg,
                    "max_latency_ms": non_neg,
                    "max_jitter_ms": non_neg,
                    "max_loss_pct": {"type": "number", "minimum": 0, "maximum": 100}
                }
            },
            "constraints": {
                "type": "object", "additionalProperties": false,
                "properties": {
                    "cpu_cores": {"type": "number", "exclusiveMinimum": 0},
                    "memory_mb": {"type": "integer", "minimum": 0},
                    "gpus": {"type": "array", "items": {
                        "type": "object", "additionalProperties": false,
                        "required": ["type", "memory_mb"],
                        "properties": {"type": {"type": "string"}, "memory_mb": {"type": "integer", "minimum": 0}}
                    }}
                }
            },
            "tasks": {"type": "array", "minItems": 1, "items": {
                "type": "object",
                "additionalProperties": false,
                "required": ["name", "kind"],
                "oneOf": [{"required": ["function"]}, {"required": ["program"]}],
                "properties": {
                    "name": {"type": "string", "pattern": "^[A-Za-z0-9._-]+$"},
                    "kind": {"enum": ["head", "cpu", "gpu", "tail"]},
                    "function": {"enum": names},
                    "program": {"oneOf": [
                        {"type": "string", "description": "a user stage program, relative to the app file"},
                        {"type": "object", "additionalProperties": false, "required": ["path"],
                         "properties": {"path": {"type": "string"}, "args": {"type": "array", "items": {"type": "string"}}}}
                    ]},
                    "params": {"type": "object"},
                    "inputs": {"type": "array", "items": {"type": "string"}, "uniqueItems": true},
                    "batch": {
                        "type": "object", "additionalProperties": false, "required": ["size"],
                        "properties": {"size": {"type": "integer", "minimum": 1}, "max_wait_ms": non_neg}
                    },
                    "replicas": {"type": "integer", "minimum": 1},
                    "restart": {"enum": ["permanent", "transient", "temporary"]}
                },
                "allOf": per_function
            }}
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_lists_every_function_with_its_required_params() {
        let schema = app_schema();
        let rules = schema["properties"]["tasks"]["items"]["allOf"]
            .as_array()
            .expect("allOf");
        assert_eq!(rules.len(), FUNCTIONS.len());
        let resize = rules
            .iter()
            .find(|r| r["if"]["properties"]["function"]["const"] == "image.resize")
            .expect("image.resize rule");
        assert_eq!(
            resize["then"]["properties"]["params"]["required"],
            json!(["width", "height"])
        );
        assert_eq!(resize["then"]["properties"]["kind"]["enum"], json!(["cpu"]));
    }
}

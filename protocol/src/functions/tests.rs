//! Tests of the registry's table: names and ids unique, every declared parameter read by
//! the typed struct, and unknown fields refused by it.

use super::*;
use serde_json::json;

/// A valid value of a parameter type (for parsing every declared parameter at once).
fn sample(ty: ParamType) -> Value {
    match ty {
        ParamType::PositiveInt | ParamType::Count => json!(3),
        ParamType::NonNegative => json!(2.5),
        ParamType::Text | ParamType::Path | ParamType::PathOrUrl => json!("x"),
        ParamType::OneOf(options) => json!(options[0]),
        ParamType::TextList | ParamType::TextOrList => json!(["a"]),
        ParamType::Bool => json!(true),
    }
}

#[test]
fn names_and_ids_are_unique() {
    for (i, f) in FUNCTIONS.iter().enumerate() {
        for g in &FUNCTIONS[i + 1..] {
            assert_ne!(f.name, g.name);
            assert_ne!(f.id, g.id, "{} and {} share an id", f.name, g.name);
        }
        assert_eq!(builtin(f.name), Some(f.id));
        assert_eq!(def(f.id).map(|d| d.name), Some(f.name));
    }
}

#[test]
fn every_declared_parameter_is_a_field_of_the_typed_struct() {
    for f in FUNCTIONS {
        let all: Map<String, Value> = f
            .params
            .iter()
            .map(|p| (p.name.to_string(), sample(p.ty)))
            .collect();
        assert_eq!((f.check)(&all), Ok(()), "{} with every parameter", f.name);
        let required: Map<String, Value> = f
            .params
            .iter()
            .filter(|p| p.required)
            .map(|p| (p.name.to_string(), sample(p.ty)))
            .collect();
        assert_eq!(
            (f.check)(&required),
            Ok(()),
            "{} with its required parameters",
            f.name
        );
        let mut unknown = required.clone();
        unknown.insert("no_such_field".into(), json!(1));
        let e = (f.check)(&unknown).expect_err("an unknown field");
        assert!(e.contains("no_such_field"), "{}: {e}", f.name);
    }
}

#[test]
fn heads_take_nothing_tails_make_nothing_and_writers_have_a_pool_size() {
    for f in FUNCTIONS {
        if f.kinds == [TaskKind::Head] {
            assert!(f.takes.is_empty() && !f.makes.is_empty(), "{}", f.name);
        }
        if f.kinds == [TaskKind::Tail] {
            assert!(f.makes.is_empty() && !f.takes.is_empty(), "{}", f.name);
        }
        if f.kinds.contains(&TaskKind::Cpu) || f.kinds.contains(&TaskKind::Gpu) {
            assert!(!f.takes.is_empty() && !f.makes.is_empty(), "{}", f.name);
        }
        if f.hints.writes_payloads {
            assert_ne!(f.hints.slot, SlotSize::InputFrames, "{}", f.name);
        }
    }
}

#[test]
fn defaults_are_the_documented_ones() {
    let gen: params::ImageGen = params::parse(
        json!({"width": 4, "height": 2})
            .as_object()
            .expect("object"),
    )
    .expect("parses");
    assert_eq!(
        (gen.count, gen.fps, gen.pattern.as_str()),
        (100, 0.0, "gradient")
    );
    let show: params::ImageShow =
        params::parse(json!({"dir": "out"}).as_object().expect("object")).expect("parses");
    assert_eq!(show.fps, 25.0);
    let print: params::TablePrint =
        params::parse(json!({}).as_object().expect("object")).expect("parses");
    assert_eq!(
        (print.format.as_str(), print.formulas.as_str()),
        ("pretty", "keep")
    );
    let fault: params::TestFault =
        params::parse(json!({"mode": "stall"}).as_object().expect("object")).expect("parses");
    assert_eq!((fault.after, fault.stall_ms), (0, 1000));
}

#[test]
fn formulas_are_escaped_in_csv_only() {
    let check = |v: serde_json::Value| params::check_table_print(v.as_object().expect("object"));
    check(json!({"format": "csv", "formulas": "escape"})).expect("csv escapes");
    check(json!({"format": "jsonl", "formulas": "keep"})).expect("keep is the default anywhere");
    let err = check(json!({"format": "pretty", "formulas": "escape"})).expect_err("not csv");
    assert!(
        err.contains("formulas 'escape' is for csv") && err.contains("'pretty'"),
        "{err}"
    );
    let err = check(json!({"format": "csv", "formulas": "maybe"})).expect_err("unknown");
    assert!(
        err.contains("formulas 'maybe' is not one of keep, escape"),
        "{err}"
    );
}

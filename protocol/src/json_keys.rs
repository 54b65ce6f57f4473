//! Duplicate keys in an app file. JSON allows them and a parser keeps the last, so a
//! key written twice (a pasted line, `"width": 64, … "width": 32`) would silently
//! replace the first; the app's own fields refuse it already, and this finds it
//! anywhere, params included.

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use std::collections::HashSet;
use std::fmt;

/// Any JSON value, refused when an object in it has a key twice.
pub struct UniqueKeys;

impl<'de> Deserialize<'de> for UniqueKeys {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(de::Error::custom(format_args!(
                    "the key \"{}\" appears twice in one object (the second would silently replace the first)",
                    crate::text::shown(&key)
                )));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(text: &str) -> Result<(), String> {
        let mut de = serde_json::Deserializer::from_str(text);
        serde_path_to_error::deserialize::<_, UniqueKeys>(&mut de)
            .map(|_| ())
            .map_err(|e| format!("{}: {}", e.path(), e.inner()))
    }

    #[test]
    fn a_key_twice_in_any_object_is_named_with_its_place() {
        assert_eq!(
            check(r#"{"a": [1, {"b": 2, "c": {"b": 3}}], "d": null}"#),
            Ok(())
        );
        let err =
            check("{\"tasks\": [{}, {\"params\": {\"width\": 64,\n \"width\": 32}}]}").unwrap_err();
        assert!(err.starts_with("tasks[1].params"), "{err}");
        assert!(err.contains("the key \"width\" appears twice"), "{err}");
        assert!(err.contains("line 2"), "{err}");
    }
}

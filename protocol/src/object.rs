//! A JSON object read field by field for the decoders of untrusted input (client frames,
//! envelopes): each field's value kept raw for its own check, and a name given twice noticed —
//! a plain map keeps the last silently, and parsers disagree on which one counts.

use std::{
    borrow::Cow,
    collections::{BTreeMap, btree_map::Entry},
};

use serde::{
    Deserialize, Deserializer,
    de::{MapAccess, Visitor},
};
use serde_json::value::RawValue;

pub(crate) type Fields<'a> = BTreeMap<Cow<'a, str>, &'a RawValue>;

/// A JSON object's fields (the first of each name), and the first name it gives twice.
pub(crate) struct Object<'a> {
    pub fields: Fields<'a>,
    pub duplicate: Option<String>,
}

impl<'de> Deserialize<'de> for Object<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ObjectVisitor;
        impl<'de> Visitor<'de> for ObjectVisitor {
            type Value = Object<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Object<'de>, A::Error> {
                let mut object = Object { fields: BTreeMap::new(), duplicate: None };
                while let Some((name, value)) = map.next_entry::<Cow<'de, str>, &'de RawValue>()? {
                    match object.fields.entry(name) {
                        Entry::Occupied(first) => {
                            object.duplicate.get_or_insert_with(|| shown(first.key()));
                        }
                        Entry::Vacant(slot) => {
                            slot.insert(value);
                        }
                    }
                }
                Ok(object)
            }
        }
        deserializer.deserialize_map(ObjectVisitor)
    }
}

/// Reads `json` as one object; an error that `is_data()` when it is JSON but not an object.
pub(crate) fn parse_object(json: &str) -> Result<Object<'_>, serde_json::Error> {
    serde_json::from_str(json)
}

/// A field name as a refusal quotes it: at most 64 characters.
pub(crate) fn shown(name: &str) -> String {
    name.chars().take(64).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_of_a_name_is_kept_and_the_name_reported() {
        let object = parse_object(r#"{"a":1,"b":2,"a":3,"b":4}"#).unwrap();
        assert_eq!(object.fields["a"].get(), "1");
        assert_eq!(object.duplicate.as_deref(), Some("a"));
        assert_eq!(parse_object(r#"{"a":{"x":1,"x":2}}"#).unwrap().duplicate, None, "only this object's names");
        assert!(parse_object("[1]").err().is_some_and(|e| e.is_data()));
        assert!(parse_object("{").err().is_some_and(|e| !e.is_data()));
    }
}

//! The fast path of the row parser: rows read straight from the request text, with the
//! rules of [`super::parse_row`] (strings, arrays of strings, numbers and booleans as text,
//! nulls absent); what those rules refuse is a data error here.

use std::fmt;

use serde::{
    Deserialize, Deserializer,
    de::{self, MapAccess, SeqAccess, Visitor},
};

use opsmesh_proto::alert::{FieldValue, Row};

/// The fast path of [`parse_row`]: a row straight from the text, with the same rules. What
/// they refuse is a data error here, and the body is then parsed again through
/// [`SplunkFields::from_values`], which says where.
pub(super) struct WireRow(pub(super) Row);

pub(super) fn wire_rows<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<Row>>, D::Error> {
    Ok(Option::<Vec<WireRow>>::deserialize(d)?
        .map(|rows| rows.into_iter().map(|WireRow(row)| row).collect()))
}

impl<'de> Deserialize<'de> for WireRow {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct RowVisitor;
        impl<'de> Visitor<'de> for RowVisitor {
            type Value = WireRow;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a result row (an object)")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<WireRow, A::Error> {
                let mut row = Row::new();
                while let Some(key) = map.next_key::<String>()? {
                    match map.next_value::<WireField>()? {
                        WireField::One(one) => row.insert(key, FieldValue::One(one)),
                        WireField::Many(many) => row.insert(key, FieldValue::Many(many)),
                        // As in a JSON object, a repeated key replaces the earlier value; a null
                        // field is absent.
                        WireField::Null => row.remove(&key),
                    };
                }
                Ok(WireRow(row))
            }
        }
        d.deserialize_map(RowVisitor)
    }
}

/// One field of a row, as [`map_to_row`] and [`scalar_text`] read it.
enum WireField {
    Null,
    One(String),
    Many(Vec<String>),
}

impl<'de> Deserialize<'de> for WireField {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(FieldVisitor)
    }
}

/// An entry of a multivalue field: text only.
struct WireText(String);

impl<'de> Deserialize<'de> for WireText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match d.deserialize_any(FieldVisitor)? {
            WireField::One(text) => Ok(Self(text)),
            WireField::Null | WireField::Many(_) => {
                Err(de::Error::custom("multivalue entries must be strings"))
            }
        }
    }
}

struct FieldVisitor;

impl<'de> Visitor<'de> for FieldVisitor {
    type Value = WireField;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a string or an array of strings")
    }
    fn visit_unit<E>(self) -> Result<WireField, E> {
        Ok(WireField::Null)
    }
    fn visit_str<E>(self, v: &str) -> Result<WireField, E> {
        Ok(WireField::One(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<WireField, E> {
        Ok(WireField::One(v))
    }
    fn visit_bool<E>(self, v: bool) -> Result<WireField, E> {
        Ok(WireField::One(v.to_string()))
    }
    fn visit_i64<E>(self, v: i64) -> Result<WireField, E> {
        Ok(WireField::One(v.to_string()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<WireField, E> {
        Ok(WireField::One(v.to_string()))
    }
    fn visit_f64<E>(self, v: f64) -> Result<WireField, E> {
        // Formatted as `serde_json::Value` formats it; a number it cannot hold is null there.
        Ok(serde_json::Number::from_f64(v)
            .map_or(WireField::Null, |n| WireField::One(n.to_string())))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<WireField, A::Error> {
        let mut many = Vec::with_capacity(seq.size_hint().unwrap_or(0));
        while let Some(WireText(text)) = seq.next_element()? {
            many.push(text);
        }
        Ok(WireField::Many(many))
    }
}

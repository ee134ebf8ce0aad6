//! Decoding that names the field that failed, for JSON and for postcard.
//!
//! `invalid length 130` helps nobody; `hw_serial: invalid length 130, expected at most 128`
//! does. JSON paths come from `serde_path_to_error`. Postcard is not self-describing (structs
//! are plain sequences), so that crate can only say "field 3"; the small tracking
//! deserializer below records the field names serde hands to `deserialize_struct` and the
//! variant names of enums, and keeps the path of the element being decoded when it fails.

extern crate alloc;
extern crate std;

use alloc::string::{String, ToString};
use alloc::vec::Vec;
use core::cell::RefCell;
use core::fmt;

use serde::de::{self, DeserializeOwned, DeserializeSeed, Deserializer, Visitor};

/// A message that did not decode, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    /// Dotted path of the field (`pcr_values[3].value`); empty for the message as a whole.
    pub field: String,
    pub message: String,
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.field, self.message)
        }
    }
}

impl std::error::Error for DecodeError {}

/// Decodes JSON; the error names the field.
pub fn from_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        DecodeError {
            field: if path == "." || path == "?" {
                String::new()
            } else {
                path
            },
            message: e.into_inner().to_string(),
        }
    })?;
    de.end().map_err(|e| DecodeError {
        field: String::new(),
        message: e.to_string(),
    })?;
    Ok(value)
}

/// Encodes postcard.
pub fn to_postcard<T: serde::Serialize>(value: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(value)
}

/// Decodes postcard (the whole input, nothing after it); the error names the field.
pub fn from_postcard<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    let path = RefCell::new(Vec::new());
    let mut de = postcard::Deserializer::from_bytes(bytes);
    let result = T::deserialize(Track {
        inner: &mut de,
        path: &path,
    });
    let field = render(&path.borrow());
    let value = result.map_err(|e: postcard::Error| DecodeError {
        field,
        message: e.to_string(),
    })?;
    let rest = de.finalize().map_err(|e| DecodeError {
        field: String::new(),
        message: e.to_string(),
    })?;
    if !rest.is_empty() {
        return Err(DecodeError {
            field: String::new(),
            message: alloc::format!("{} bytes after the message", rest.len()),
        });
    }
    Ok(value)
}

#[derive(Debug, Clone, Copy)]
enum Segment {
    Field(&'static str),
    Index(usize),
    Variant(&'static str),
}

fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for seg in path {
        match seg {
            Segment::Field(name) | Segment::Variant(name) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(name);
            }
            Segment::Index(i) => out.push_str(&alloc::format!("[{i}]")),
        }
    }
    out
}

type Path = RefCell<Vec<Segment>>;

/// A deserializer that tracks where it is. Segments are pushed on the way in and popped
/// only on success, so after a failure the stack is the path to the failing element.
struct Track<'p, D> {
    inner: D,
    path: &'p Path,
}

/// Same, for a visitor; `names` are the struct's field names or the enum's variant names.
struct TrackVisitor<'p, V> {
    inner: V,
    path: &'p Path,
    names: &'static [&'static str],
}

macro_rules! forward_simple {
    ($($method:ident),*) => {$(
        fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
            self.inner.$method(TrackVisitor { inner: visitor, path: self.path, names: &[] })
        }
    )*};
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for Track<'_, D> {
    type Error = D::Error;

    forward_simple!(
        deserialize_any,
        deserialize_bool,
        deserialize_i8,
        deserialize_i16,
        deserialize_i32,
        deserialize_i64,
        deserialize_i128,
        deserialize_u8,
        deserialize_u16,
        deserialize_u32,
        deserialize_u64,
        deserialize_u128,
        deserialize_f32,
        deserialize_f64,
        deserialize_char,
        deserialize_str,
        deserialize_string,
        deserialize_bytes,
        deserialize_byte_buf,
        deserialize_option,
        deserialize_unit,
        deserialize_seq,
        deserialize_map,
        deserialize_identifier,
        deserialize_ignored_any
    );

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let v = TrackVisitor {
            inner: visitor,
            path: self.path,
            names: &[],
        };
        self.inner.deserialize_unit_struct(name, v)
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let v = TrackVisitor {
            inner: visitor,
            path: self.path,
            names: &[],
        };
        self.inner.deserialize_newtype_struct(name, v)
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let v = TrackVisitor {
            inner: visitor,
            path: self.path,
            names: &[],
        };
        self.inner.deserialize_tuple(len, v)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        len: usize,
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let v = TrackVisitor {
            inner: visitor,
            path: self.path,
            names: &[],
        };
        self.inner.deserialize_tuple_struct(name, len, v)
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let v = TrackVisitor {
            inner: visitor,
            path: self.path,
            names: fields,
        };
        self.inner.deserialize_struct(name, fields, v)
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        let v = TrackVisitor {
            inner: visitor,
            path: self.path,
            names: variants,
        };
        self.inner.deserialize_enum(name, variants, v)
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

macro_rules! forward_visit {
    ($($method:ident: $ty:ty),*) => {$(
        fn $method<E: de::Error>(self, v: $ty) -> Result<V::Value, E> {
            self.inner.$method(v)
        }
    )*};
}

impl<'de, V: Visitor<'de>> Visitor<'de> for TrackVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    forward_visit!(
        visit_bool: bool, visit_i8: i8, visit_i16: i16, visit_i32: i32, visit_i64: i64,
        visit_i128: i128, visit_u8: u8, visit_u16: u16, visit_u32: u32, visit_u64: u64,
        visit_u128: u128, visit_f32: f32, visit_f64: f64, visit_char: char,
        visit_str: &str, visit_borrowed_str: &'de str, visit_string: String,
        visit_bytes: &[u8], visit_borrowed_bytes: &'de [u8], visit_byte_buf: Vec<u8>
    );

    fn visit_none<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_none()
    }

    fn visit_unit<E: de::Error>(self) -> Result<V::Value, E> {
        self.inner.visit_unit()
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_some(Track {
            inner: d,
            path: self.path,
        })
    }

    fn visit_newtype_struct<D: Deserializer<'de>>(self, d: D) -> Result<V::Value, D::Error> {
        self.inner.visit_newtype_struct(Track {
            inner: d,
            path: self.path,
        })
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, seq: A) -> Result<V::Value, A::Error> {
        self.inner.visit_seq(TrackSeq {
            inner: seq,
            path: self.path,
            names: self.names,
            index: 0,
        })
    }

    fn visit_map<A: de::MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(TrackMap {
            inner: map,
            path: self.path,
        })
    }

    fn visit_enum<A: de::EnumAccess<'de>>(self, data: A) -> Result<V::Value, A::Error> {
        self.inner.visit_enum(TrackEnum {
            inner: data,
            path: self.path,
            names: self.names,
        })
    }
}

struct TrackSeed<'p, S> {
    inner: S,
    path: &'p Path,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for TrackSeed<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(Track {
            inner: d,
            path: self.path,
        })
    }
}

struct TrackSeq<'p, A> {
    inner: A,
    path: &'p Path,
    names: &'static [&'static str],
    index: usize,
}

impl<'de, A: de::SeqAccess<'de>> de::SeqAccess<'de> for TrackSeq<'_, A> {
    type Error = A::Error;

    fn next_element_seed<S: DeserializeSeed<'de>>(
        &mut self,
        seed: S,
    ) -> Result<Option<S::Value>, A::Error> {
        let segment = match self.names.get(self.index) {
            Some(name) => Segment::Field(name),
            None => Segment::Index(self.index),
        };
        self.path.borrow_mut().push(segment);
        let value = self.inner.next_element_seed(TrackSeed {
            inner: seed,
            path: self.path,
        })?;
        self.path.borrow_mut().pop();
        self.index += 1;
        Ok(value)
    }

    fn size_hint(&self) -> Option<usize> {
        self.inner.size_hint()
    }
}

struct TrackMap<'p, A> {
    inner: A,
    path: &'p Path,
}

impl<'de, A: de::MapAccess<'de>> de::MapAccess<'de> for TrackMap<'_, A> {
    type Error = A::Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        self.inner.next_key_seed(seed)
    }

    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.next_value_seed(TrackSeed {
            inner: seed,
            path: self.path,
        })
    }
}

struct TrackEnum<'p, A> {
    inner: A,
    path: &'p Path,
    names: &'static [&'static str],
}

/// Reads the variant index through a wrapper that remembers which name it was.
struct VariantName<'p, S> {
    inner: S,
    names: &'static [&'static str],
    found: &'p RefCell<Option<&'static str>>,
}

impl<'de, S: DeserializeSeed<'de>> DeserializeSeed<'de> for VariantName<'_, S> {
    type Value = S::Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<S::Value, D::Error> {
        self.inner.deserialize(VariantNameDe {
            inner: d,
            names: self.names,
            found: self.found,
        })
    }
}

struct VariantNameDe<'p, D> {
    inner: D,
    names: &'static [&'static str],
    found: &'p RefCell<Option<&'static str>>,
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for VariantNameDe<'_, D> {
    type Error = D::Error;

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_identifier(VariantNameVisitor {
            inner: visitor,
            names: self.names,
            found: self.found,
        })
    }

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map struct enum ignored_any
    }

    fn is_human_readable(&self) -> bool {
        self.inner.is_human_readable()
    }
}

struct VariantNameVisitor<'p, V> {
    inner: V,
    names: &'static [&'static str],
    found: &'p RefCell<Option<&'static str>>,
}

impl<'de, V: Visitor<'de>> Visitor<'de> for VariantNameVisitor<'_, V> {
    type Value = V::Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }

    fn visit_u32<E: de::Error>(self, v: u32) -> Result<V::Value, E> {
        *self.found.borrow_mut() = self.names.get(v as usize).copied();
        self.inner.visit_u32(v)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<V::Value, E> {
        *self.found.borrow_mut() = usize::try_from(v)
            .ok()
            .and_then(|i| self.names.get(i).copied());
        self.inner.visit_u64(v)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<V::Value, E> {
        *self.found.borrow_mut() = self.names.iter().find(|n| **n == v).copied();
        self.inner.visit_str(v)
    }

    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<V::Value, E> {
        self.inner.visit_bytes(v)
    }
}

impl<'de, 'p, A: de::EnumAccess<'de>> de::EnumAccess<'de> for TrackEnum<'p, A> {
    type Error = A::Error;
    type Variant = TrackVariant<'p, A::Variant>;

    fn variant_seed<S: DeserializeSeed<'de>>(
        self,
        seed: S,
    ) -> Result<(S::Value, Self::Variant), A::Error> {
        let found = RefCell::new(None);
        let (value, variant) = self.inner.variant_seed(VariantName {
            inner: seed,
            names: self.names,
            found: &found,
        })?;
        let name = found.into_inner().unwrap_or("?");
        self.path.borrow_mut().push(Segment::Variant(name));
        Ok((
            value,
            TrackVariant {
                inner: variant,
                path: self.path,
            },
        ))
    }
}

struct TrackVariant<'p, A> {
    inner: A,
    path: &'p Path,
}

impl<'de, A: de::VariantAccess<'de>> de::VariantAccess<'de> for TrackVariant<'_, A> {
    type Error = A::Error;

    fn unit_variant(self) -> Result<(), A::Error> {
        self.inner.unit_variant()?;
        self.path.borrow_mut().pop();
        Ok(())
    }

    fn newtype_variant_seed<S: DeserializeSeed<'de>>(self, seed: S) -> Result<S::Value, A::Error> {
        let v = self.inner.newtype_variant_seed(TrackSeed {
            inner: seed,
            path: self.path,
        })?;
        self.path.borrow_mut().pop();
        Ok(v)
    }

    fn tuple_variant<V: Visitor<'de>>(self, len: usize, visitor: V) -> Result<V::Value, A::Error> {
        let visitor = TrackVisitor {
            inner: visitor,
            path: self.path,
            names: &[],
        };
        let v = self.inner.tuple_variant(len, visitor)?;
        self.path.borrow_mut().pop();
        Ok(v)
    }

    fn struct_variant<V: Visitor<'de>>(
        self,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, A::Error> {
        let visitor = TrackVisitor {
            inner: visitor,
            path: self.path,
            names: fields,
        };
        let v = self.inner.struct_variant(fields, visitor)?;
        self.path.borrow_mut().pop();
        Ok(v)
    }
}

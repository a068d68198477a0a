//! Deserialization helpers: range-checked numbers, sizes, padding and activations (checked
//! while parsing, so that serde_json attaches the position), the key filter used for the
//! common layer keys, and raw object fields.

use std::fmt;

use serde::de::{
    self, DeserializeSeed, Deserializer, Error as _, IgnoredAny, IntoDeserializer, MapAccess,
    SeqAccess, Visitor,
};
use serde::Deserialize;
use serde_json::value::RawValue;

use super::layers::Activation;
use crate::ops::{PadMode, Padding};

/// The largest size, stride, padding, unit or dimension count accepted: large enough for
/// any real model, small enough that no shape computation can overflow.
pub const MAX_SIZE: usize = 1 << 24;

/// An integer in `min..=MAX_SIZE`.
struct SizeVisitor {
    min: u64,
}

impl<'de> Visitor<'de> for SizeVisitor {
    type Value = usize;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.min == 0 { "a non-negative integer" } else { "a positive integer" })
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<usize, E> {
        if v < self.min {
            return Err(E::custom(format!("must be at least {}, got {v}", self.min)));
        }
        if v > MAX_SIZE as u64 {
            return Err(E::custom(format!("must be at most {MAX_SIZE}, got {v}")));
        }
        Ok(v as usize)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<usize, E> {
        if v < self.min as i64 {
            return Err(E::custom(format!("must be at least {}, got {v}", self.min)));
        }
        self.visit_u64(v as u64)
    }
}

const POSITIVE: SizeVisitor = SizeVisitor { min: 1 };

/// An integer in `1..=MAX_SIZE`.
struct Positive(usize);

impl<'de> Deserialize<'de> for Positive {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_u64(POSITIVE).map(Positive)
    }
}

/// An integer in `0..=MAX_SIZE`.
struct NonNegative(usize);

impl<'de> Deserialize<'de> for NonNegative {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_u64(SizeVisitor { min: 0 }).map(NonNegative)
    }
}

/// An integer in `1..=MAX_SIZE`.
pub(crate) fn positive<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    d.deserialize_u64(POSITIVE)
}

/// A size or stride: an integer ≥ 1 (both dimensions) or `[height, width]`.
struct PairVisitor;

impl<'de> Visitor<'de> for PairVisitor {
    type Value = [usize; 2];
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a positive integer or [height, width]")
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<[usize; 2], E> {
        let v = POSITIVE.visit_u64(v)?;
        Ok([v, v])
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<[usize; 2], E> {
        let v = POSITIVE.visit_i64(v)?;
        Ok([v, v])
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<[usize; 2], A::Error> {
        let mut out = [0; 2];
        for (i, slot) in out.iter_mut().enumerate() {
            match seq.next_element::<Positive>()? {
                Some(Positive(v)) => *slot = v,
                None => return Err(A::Error::invalid_length(i, &"two sizes [height, width]")),
            }
        }
        if seq.next_element::<IgnoredAny>()?.is_some() {
            return Err(A::Error::custom("expected two sizes [height, width], got more"));
        }
        Ok(out)
    }
}

/// A size or stride: an integer ≥ 1 or `[height, width]`.
pub(crate) fn pair<'de, D: Deserializer<'de>>(d: D) -> Result<[usize; 2], D::Error> {
    d.deserialize_any(PairVisitor)
}

/// An optional size or stride.
pub(crate) fn opt_pair<'de, D: Deserializer<'de>>(d: D) -> Result<Option<[usize; 2]>, D::Error> {
    d.deserialize_any(PairVisitor).map(Some)
}

/// A shape per example: a non-empty list of integers ≥ 1.
pub(crate) fn shape<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<usize>, D::Error> {
    struct ShapeVisitor;
    impl<'de> Visitor<'de> for ShapeVisitor {
        type Value = Vec<usize>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a list of dimensions, e.g. [28, 28, 1]")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<usize>, A::Error> {
            let mut dims = Vec::new();
            while let Some(Positive(d)) = seq.next_element()? {
                dims.push(d);
            }
            if dims.is_empty() {
                return Err(A::Error::custom("must list at least one dimension"));
            }
            Ok(dims)
        }
    }
    d.deserialize_seq(ShapeVisitor)
}

/// Padding: `"valid"`, `"same"` or `[top, bottom, left, right]`.
pub(crate) fn padding<'de, D: Deserializer<'de>>(d: D) -> Result<Padding, D::Error> {
    struct PaddingVisitor;
    impl<'de> Visitor<'de> for PaddingVisitor {
        type Value = Padding;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("\"valid\", \"same\" or [top, bottom, left, right]")
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<Padding, E> {
            match v {
                "valid" => Ok(Padding::Mode(PadMode::Valid)),
                "same" => Ok(Padding::Mode(PadMode::Same)),
                _ => Err(E::unknown_variant(v, &["valid", "same"])),
            }
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Padding, A::Error> {
            let mut out = [0; 4];
            for (i, slot) in out.iter_mut().enumerate() {
                match seq.next_element::<NonNegative>()? {
                    Some(NonNegative(v)) => *slot = v,
                    None => return Err(A::Error::invalid_length(i, &"[top, bottom, left, right]")),
                }
            }
            if seq.next_element::<IgnoredAny>()?.is_some() {
                return Err(A::Error::custom(
                    "expected four paddings [top, bottom, left, right], got more",
                ));
            }
            Ok(Padding::Explicit(out))
        }
    }
    d.deserialize_any(PaddingVisitor)
}

/// A number checked by `ok` inside the visitor, so that serde_json locates the error at the
/// number itself (an error returned after deserializing would be located at the end of the
/// enclosing object).
struct CheckedF64 {
    ok: fn(f64) -> bool,
    what: &'static str,
}

impl CheckedF64 {
    fn check<E: de::Error>(&self, x: f64) -> Result<f64, E> {
        if x.is_finite() && (self.ok)(x) {
            Ok(x)
        } else {
            Err(E::custom(format!("must be {}, got {x}", self.what)))
        }
    }
}

impl<'de> Visitor<'de> for CheckedF64 {
    type Value = f64;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a number {}", self.what)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<f64, E> {
        self.check(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<f64, E> {
        self.check(v as f64)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<f64, E> {
        self.check(v as f64)
    }
}

/// Declares a range-checked f64 field deserializer.
macro_rules! checked_f64 {
    ($name:ident, $ok:expr, $what:literal) => {
        #[doc = concat!("A finite number ", $what, ".")]
        pub(crate) fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
            d.deserialize_f64(CheckedF64 { ok: $ok, what: $what })
        }
    };
}

checked_f64!(positive_f64, |x| x > 0.0, "> 0");
checked_f64!(non_negative_f64, |x| x >= 0.0, ">= 0");
checked_f64!(unit_open, |x| x > 0.0 && x < 1.0, "in (0, 1)");
checked_f64!(unit_right_open, |x| (0.0..1.0).contains(&x), "in [0, 1)");
checked_f64!(finite_f64, |_| true, "finite");

struct FiniteF64(f64);

impl<'de> Deserialize<'de> for FiniteF64 {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        finite_f64(d).map(FiniteF64)
    }
}

impl<'de> Deserialize<'de> for Activation {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ActivationVisitor;
        impl<'de> Visitor<'de> for ActivationVisitor {
            type Value = Activation;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an activation name or {\"type\": name, \"alpha\": number}")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Activation, E> {
                Activation::from_name(v).ok_or_else(|| E::unknown_variant(v, Activation::NAMES))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Activation, A::Error> {
                let mut kind: Option<Activation> = None;
                let mut alpha: Option<f64> = None;
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "type" => {
                            if kind.is_some() {
                                return Err(A::Error::duplicate_field("type"));
                            }
                            let name: String = map.next_value()?;
                            kind = Some(Activation::from_name(&name).ok_or_else(|| {
                                A::Error::unknown_variant(&name, Activation::NAMES)
                            })?);
                        }
                        "alpha" => {
                            if alpha.is_some() {
                                return Err(A::Error::duplicate_field("alpha"));
                            }
                            alpha = Some(map.next_value::<FiniteF64>()?.0);
                        }
                        other => return Err(A::Error::unknown_field(other, &["type", "alpha"])),
                    }
                }
                let kind = kind.ok_or_else(|| A::Error::missing_field("type"))?;
                match (kind, alpha) {
                    (Activation::LeakyRelu { .. }, Some(alpha)) => {
                        Ok(Activation::LeakyRelu { alpha })
                    }
                    (Activation::Elu { .. }, Some(alpha)) => Ok(Activation::Elu { alpha }),
                    (kind, None) => Ok(kind),
                    (kind, Some(_)) => Err(A::Error::custom(format!(
                        "`alpha` applies only to leaky_relu and elu, not {}",
                        kind.name()
                    ))),
                }
            }
        }
        d.deserialize_any(ActivationVisitor)
    }
}

/// Deserializes `T` from `text` while skipping the keys `skip` of the top-level object (the
/// keys handled elsewhere: a layer's `type`, `name` and `inputs`). Positions in errors are
/// relative to `text`.
pub(crate) fn from_str_skipping<'a, T: Deserialize<'a>>(
    text: &'a str,
    skip: &'static [&'static str],
) -> Result<T, serde_json::Error> {
    let mut de = serde_json::Deserializer::from_str(text);
    let value = T::deserialize(SkipKeys { inner: &mut de, skip })?;
    de.end()?;
    Ok(value)
}

/// An optional struct that must be written as an object (not as an array of its fields, which
/// serde's derived structs also accept).
pub(crate) fn object<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<T>, D::Error> {
    T::deserialize(SkipKeys { inner: d, skip: &[] }).map(Some)
}

/// A deserializer that hides some keys of the object it reads (and rejects anything but an
/// object).
struct SkipKeys<D> {
    inner: D,
    skip: &'static [&'static str],
}

impl<'de, D: Deserializer<'de>> Deserializer<'de> for SkipKeys<D> {
    type Error = D::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_any(SkipVisitor { inner: visitor, skip: self.skip })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, D::Error> {
        self.inner.deserialize_struct(name, fields, SkipVisitor { inner: visitor, skip: self.skip })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, D::Error> {
        self.inner.deserialize_map(SkipVisitor { inner: visitor, skip: self.skip })
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct enum identifier ignored_any
    }
}

struct SkipVisitor<V> {
    inner: V,
    skip: &'static [&'static str],
}

impl<'de, V: Visitor<'de>> Visitor<'de> for SkipVisitor<V> {
    type Value = V::Value;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.expecting(f)
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<V::Value, A::Error> {
        self.inner.visit_map(SkipMap { inner: map, skip: self.skip })
    }
}

struct SkipMap<A> {
    inner: A,
    skip: &'static [&'static str],
}

impl<'de, A: MapAccess<'de>> MapAccess<'de> for SkipMap<A> {
    type Error = A::Error;
    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, A::Error> {
        loop {
            match self.inner.next_key::<String>()? {
                None => return Ok(None),
                Some(key) if self.skip.contains(&key.as_str()) => {
                    self.inner.next_value::<IgnoredAny>()?;
                }
                Some(key) => return seed.deserialize(key.into_deserializer()).map(Some),
            }
        }
    }
    fn next_value_seed<S: DeserializeSeed<'de>>(&mut self, seed: S) -> Result<S::Value, A::Error> {
        self.inner.next_value_seed(seed)
    }
}

/// The keys of a JSON object with their raw values, in file order.
pub(crate) struct Fields<'a>(pub Vec<(String, &'a RawValue)>);

impl<'de: 'a, 'a> Deserialize<'de> for Fields<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct FieldsVisitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for FieldsVisitor<'a> {
            type Value = Fields<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'a>, A::Error> {
                let mut fields: Vec<(String, &'a RawValue)> = Vec::new();
                while let Some(key) = map.next_key::<String>()? {
                    if fields.iter().any(|(k, _)| *k == key) {
                        return Err(A::Error::custom(format!("duplicate field `{key}`")));
                    }
                    let value: &'a RawValue = map.next_value()?;
                    fields.push((key, value));
                }
                Ok(Fields(fields))
            }
        }
        d.deserialize_map(FieldsVisitor(std::marker::PhantomData))
    }
}

impl<'a> Fields<'a> {
    /// The raw value of a key.
    pub fn get(&self, key: &str) -> Option<&'a RawValue> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| *v)
    }
}

/// The fields of the object in `text` (an error if it is not an object).
pub(crate) fn object_fields(text: &str) -> Result<Fields<'_>, serde_json::Error> {
    serde_json::from_str(text)
}

//! The serde visitors that read a header and a claims set strictly: `null` is not absence,
//! numeric dates are plain numbers, `aud` is a string or strings, `scp` joins into one string.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};

/// The latest numeric date accepted: 9999-12-31T23:59:59Z. Anything later (such as `1e300`) is
/// refused as malformed rather than read as "never expires".
const MAX_NUMERIC_DATE: u64 = 253_402_300_799;

/// A claims set, read in one pass: the registered claims this crate checks, and the names of
/// every other member that is not `null` (for `require_claims`). A member named twice, however
/// spelled (`"role"` and `"r\u006fle"` are one name), is refused: otherwise a parser that keeps
/// the first and one that keeps the last would read two different tokens from one signature.
#[derive(Default)]
pub(super) struct RawClaims<'a> {
    pub(super) exp: Present<NumericDate>,
    pub(super) nbf: Present<NumericDate>,
    pub(super) iat: Present<NumericDate>,
    pub(super) iss: Present<Str<'a>>,
    pub(super) sub: Present<Str<'a>>,
    pub(super) aud: Present<Audience<'a>>,
    pub(super) jti: Present<Str<'a>>,
    pub(super) sid: Present<Str<'a>>,
    pub(super) scope: Present<Str<'a>>,
    pub(super) scp: Present<Scopes>,
    /// `cnf` (RFC 7800): only its `jkt` member (RFC 9449 §6.1) is read.
    pub(super) cnf: Present<Confirmation<'a>>,
    /// The other members, not `null`.
    pub(super) others: Vec<Cow<'a, str>>,
}

/// Up to this many members, duplicates are found by a linear scan; past it, by a hash set.
const LINEAR_SCAN: usize = 16;

impl<'de: 'a, 'a> Deserialize<'de> for RawClaims<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawClaims<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a claims object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawClaims<'a>, A::Error> {
                let mut raw = RawClaims::default();
                let mut names = Names::Few(Vec::new());
                while let Some(name) = map.next_key::<Str<'de>>()? {
                    if !names.insert(name.0.clone()) {
                        return Err(de::Error::custom(format_args!(
                            "duplicate member `{}`",
                            name.0
                        )));
                    }
                    raw.read(name.0, &mut map)?;
                }
                Ok(raw)
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

impl<'a> RawClaims<'a> {
    /// Reads the value of member `name`.
    fn read<'de: 'a, A: MapAccess<'de>>(
        &mut self,
        name: Cow<'a, str>,
        map: &mut A,
    ) -> Result<(), A::Error> {
        fn value<'de, T: Deserialize<'de>, A: MapAccess<'de>>(
            map: &mut A,
        ) -> Result<Present<T>, A::Error> {
            map.next_value::<T>().map(|v| Present(Some(v)))
        }
        match &*name {
            "exp" => self.exp = value(map)?,
            "nbf" => self.nbf = value(map)?,
            "iat" => self.iat = value(map)?,
            "iss" => self.iss = value(map)?,
            "sub" => self.sub = value(map)?,
            "aud" => self.aud = value(map)?,
            "jti" => self.jti = value(map)?,
            "sid" => self.sid = value(map)?,
            "scope" => self.scope = value(map)?,
            "scp" => self.scp = value(map)?,
            "cnf" => {
                self.cnf = value(map)?;
                // For `require_claims(["cnf"])`, whatever confirmation method it holds.
                self.others.push(name);
            }
            // `null` counts as absent for a required claim.
            _ => {
                if map.next_value::<Option<IgnoredAny>>()?.is_some() {
                    self.others.push(name);
                }
            }
        }
        Ok(())
    }
}

/// The member names seen so far in one object: a short list, or a hash set once there are
/// many (SipHash, so a crafted set of names cannot make it slow).
enum Names<'a> {
    Few(Vec<Cow<'a, str>>),
    Many(HashSet<Cow<'a, str>>),
}

impl<'a> Names<'a> {
    /// Records `name`; false if it was seen before. A borrowed name costs no copy.
    fn insert(&mut self, name: Cow<'a, str>) -> bool {
        match self {
            Names::Few(list) => {
                if list.contains(&name) {
                    return false;
                }
                list.push(name);
                if list.len() > LINEAR_SCAN {
                    *self = Names::Many(list.drain(..).collect());
                }
                true
            }
            Names::Many(set) => set.insert(name),
        }
    }
}

/// A member that may be absent, but whose `null` is refused (unlike `Option`).
pub(super) struct Present<T>(pub(super) Option<T>);

impl<T> Default for Present<T> {
    fn default() -> Self {
        Self(None)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Present<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        T::deserialize(d).map(|v| Self(Some(v)))
    }
}

/// A JSON string, borrowed from the input when it has no escapes.
pub(super) struct Str<'a>(pub(super) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Str<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Str<'a>, E> {
                Ok(Str(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V(PhantomData))
    }
}

/// An RFC 7519 NumericDate: a non-negative number no later than year 9999, read as whole
/// seconds (fractions are dropped).
pub(super) struct NumericDate(pub(super) u64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = NumericDate;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative number of seconds no later than year 9999")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<NumericDate, E> {
                if v <= MAX_NUMERIC_DATE {
                    Ok(NumericDate(v))
                } else {
                    Err(E::custom("date out of range"))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<NumericDate, E> {
                u64::try_from(v)
                    .map_err(|_| E::custom("negative date"))
                    .and_then(|v| self.visit_u64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<NumericDate, E> {
                if v.is_finite() && (0.0..=MAX_NUMERIC_DATE as f64).contains(&v) {
                    Ok(NumericDate(v as u64))
                } else {
                    Err(E::custom("date out of range"))
                }
            }
        }
        d.deserialize_any(V)
    }
}

/// `aud`: one string or an array of strings.
pub(super) struct Audience<'a>(pub(super) Vec<Cow<'a, str>>);

impl<'de: 'a, 'a> Deserialize<'de> for Audience<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Audience<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Audience<'a>, E> {
                Ok(Audience(vec![Cow::Borrowed(v)]))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Audience<'a>, E> {
                Ok(Audience(vec![Cow::Owned(v.to_owned())]))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Audience<'a>, A::Error> {
                let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(1).min(16));
                while let Some(s) = seq.next_element::<Str<'a>>()? {
                    out.push(s.0);
                }
                Ok(Audience(out))
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// `scp`: an array of strings (or one string), joined with spaces.
pub(super) struct Scopes(pub(super) String);

impl<'de> Deserialize<'de> for Scopes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Scopes;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array of strings")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Scopes, E> {
                Ok(Scopes(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Scopes, A::Error> {
                let mut out = String::new();
                while let Some(s) = seq.next_element::<Str<'de>>()? {
                    // One scope per element: a space inside one would smuggle in another.
                    if s.0.is_empty() || s.0.contains(' ') {
                        return Err(de::Error::custom("a scope holds a space or is empty"));
                    }
                    if !out.is_empty() {
                        out.push(' ');
                    }
                    out.push_str(&s.0);
                }
                Ok(Scopes(out))
            }
        }
        d.deserialize_any(V)
    }
}

/// A `cnf` object: its `jkt` (a string, named once), other members skipped.
pub(super) struct Confirmation<'a> {
    pub(super) jkt: Option<Cow<'a, str>>,
}

impl<'de: 'a, 'a> Deserialize<'de> for Confirmation<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Confirmation<'a>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a confirmation object")
            }
            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Confirmation<'a>, A::Error> {
                let mut jkt = None;
                let mut names = Names::Few(Vec::new());
                while let Some(name) = map.next_key::<Str<'de>>()? {
                    if !names.insert(name.0.clone()) {
                        return Err(de::Error::custom("duplicate member in `cnf`"));
                    }
                    if name.0 == "jkt" {
                        jkt = Some(map.next_value::<Str<'de>>()?.0);
                    } else {
                        map.next_value::<IgnoredAny>()?;
                    }
                }
                Ok(Confirmation { jkt })
            }
        }
        d.deserialize_map(V(PhantomData))
    }
}

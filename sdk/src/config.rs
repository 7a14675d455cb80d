//! A plugin's config: JSON from the operator, read and checked once by `validate-config`, then
//! carried *prepared* — compact bytes the host stores and hands to every later call — so the hot
//! path decodes a few hundred bytes instead of parsing and re-checking a JSON document.
//!
//! Prepared bytes are an 8-byte header (`wl`, the encoding, a fingerprint of the plugin's name,
//! version and config type) followed by the config in one of two encodings. [`prepare`] tries
//! [postcard](https://docs.rs/postcard) first: it carries no field names or type markers, so
//! decoding it is what the hot path can afford (several times faster than MessagePack). It cannot
//! decode a type whose deserializer asks the format what comes next (`deserialize_any`, which
//! `#[serde(untagged)]` and hand-written "a string or a list" visitors use); such a config is
//! prepared in MessagePack instead, with structs as arrays, which describes itself. Either way,
//! a deserializer that tells an object from a list must treat both alike when
//! `is_human_readable()` is false, because a struct is a list in both encodings.
//!
//! [`prepare`] decodes what it encoded and encodes that again before it answers, and refuses a
//! config that does not read back the same, so such a mistake surfaces when a journey is
//! published rather than on every call. The host stores the bytes and hands them back unchanged;
//! [`load`] still refuses bytes of another plugin, another version or another config type (the
//! header) and bytes that do not decode, as the call's error rather than a trap. It does not
//! re-run `parse`'s checks on every call: that is [`PluginConfig::verify`], for a config whose
//! broken invariant would make a call misbehave rather than merely not match.

use serde::de::{DeserializeOwned, IgnoredAny};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{ConfigProblem, PreparedConfig};

/// The config type of a plugin.
///
/// Derive `Serialize` and `Deserialize`; override [`PluginConfig::parse`] to check more than the
/// types say or to locate problems precisely, and [`PluginConfig::verify`] to re-check what the
/// host hands back.
pub trait PluginConfig: Serialize + DeserializeOwned {
    /// Read and check the operator's JSON document when a journey is published. The default
    /// reads it with serde and reports the first error.
    fn parse(json: &str) -> Result<Self, Vec<ConfigProblem>> {
        serde_json::from_str(json)
            .map_err(|error| vec![ConfigProblem::new("", format!("invalid config: {error}"))])
    }

    /// Re-check a config decoded from prepared bytes, before a call uses it. It runs on every
    /// call and can only fail if the host hands back bytes that this plugin did not prepare yet
    /// decode, so most plugins leave it alone and evaluate any decodable config safely; override
    /// it, cheaply, when a broken invariant would make a call misbehave. The default accepts
    /// whatever decodes.
    fn verify(&self) -> Result<(), String> {
        Ok(())
    }

    /// The contact attributes this config reads, by name. Every call's contact carries only
    /// these (its id, tags, score, stage, consents, timezone and times always come), which
    /// keeps what a plugin sees to what it needs and makes calls on large contacts cheaper.
    /// The default, `None`, asks for every attribute.
    fn attributes(&self) -> Option<Vec<String>> {
        None
    }
}

/// The config of a plugin that takes none: any JSON document is accepted and prepares to nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoConfig;

impl Serialize for NoConfig {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_unit()
    }
}

impl<'de> Deserialize<'de> for NoConfig {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        IgnoredAny::deserialize(deserializer).map(|_| NoConfig)
    }
}

impl PluginConfig for NoConfig {}

const MAGIC: [u8; 2] = *b"wl";
const HEADER_BYTES: usize = 8;

/// How the config after the header is encoded; the header's third byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    /// MessagePack, structs as arrays: for configs whose types need a self-describing format.
    MessagePack = 1,
    /// postcard: the fast default.
    Postcard = 2,
}

impl Encoding {
    fn from_byte(byte: u8) -> Option<Self> {
        [Encoding::MessagePack, Encoding::Postcard]
            .into_iter()
            .find(|e| *e as u8 == byte)
    }

    fn encode<C: Serialize>(
        self,
        header: [u8; HEADER_BYTES],
        config: &C,
    ) -> Result<Vec<u8>, String> {
        let mut bytes = header.to_vec();
        bytes[2] = self as u8;
        match self {
            Encoding::MessagePack => {
                rmp_serde::encode::write(&mut bytes, config).map_err(|e| e.to_string())?
            }
            Encoding::Postcard => {
                bytes = postcard::to_extend(config, bytes).map_err(|e| e.to_string())?
            }
        }
        Ok(bytes)
    }

    fn decode<C: DeserializeOwned>(self, body: &[u8]) -> Result<C, String> {
        match self {
            Encoding::MessagePack => rmp_serde::from_slice(body).map_err(|e| e.to_string()),
            Encoding::Postcard => match postcard::take_from_bytes(body) {
                Ok((config, [])) => Ok(config),
                Ok((_, rest)) => Err(format!("{} bytes left over", rest.len())),
                Err(error) => Err(error.to_string()),
            },
        }
    }
}

/// FNV-1a over the plugin's identity and its config type's name: prepared bytes from another
/// plugin, or from another version of this one, are refused with a clear message.
fn fingerprint<C>(plugin: &str) -> [u8; 4] {
    let mut hash: u32 = 0x811c_9dc5;
    for byte in plugin
        .bytes()
        .chain([0])
        .chain(std::any::type_name::<C>().bytes())
    {
        hash ^= u32::from(byte);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash.to_le_bytes()
}

/// The header without its encoding byte (zero), which [`Encoding::encode`] fills in.
fn header<C>(plugin: &str) -> [u8; HEADER_BYTES] {
    let [a, b, c, d] = fingerprint::<C>(plugin);
    [MAGIC[0], MAGIC[1], 0, 0, a, b, c, d]
}

/// `validate-config`: parse and check the JSON, then prepare it. `plugin` is `name@version`.
///
/// The prepared bytes are decoded and verified once here too, so a config type that does not
/// round-trip is refused when the journey is published rather than on every call.
pub fn prepare<C: PluginConfig>(
    json: &str,
    plugin: &str,
) -> Result<PreparedConfig, Vec<ConfigProblem>> {
    let config = C::parse(json)?;
    // postcard when the config's types allow it, MessagePack when they need a format that
    // describes itself.
    let bytes = round_trip(Encoding::Postcard, &config, plugin)
        .or_else(|_| round_trip(Encoding::MessagePack, &config, plugin))
        .map_err(|message| vec![ConfigProblem::new("", message)])?;
    Ok(PreparedConfig {
        config: bytes,
        attributes: config.attributes(),
    })
}

/// Encode `config`, decode and verify it, and encode it again: the bytes, if both encodings agree.
fn round_trip<C: PluginConfig>(
    encoding: Encoding,
    config: &C,
    plugin: &str,
) -> Result<Vec<u8>, String> {
    let cannot = |error| format!("this plugin cannot prepare its config: {error}");
    let prepared = encoding
        .encode(header::<C>(plugin), config)
        .map_err(cannot)?;
    let read_back = load::<C>(&prepared, plugin)
        .map_err(|error| format!("this plugin's prepared config does not read back: {error}"))?;
    let again = encoding
        .encode(header::<C>(plugin), &read_back)
        .map_err(cannot)?;
    if again != prepared {
        return Err(
            "this plugin's prepared config reads back as something else (a deserializer that tells an object from a list?)"
                .into(),
        );
    }
    Ok(prepared)
}

/// Every other call: the config `validate-config` prepared, decoded and verified.
pub fn load<C: PluginConfig>(prepared: &[u8], plugin: &str) -> Result<C, String> {
    let (head, body) = prepared.split_at_checked(HEADER_BYTES).ok_or_else(|| {
        format!(
            "invalid prepared config: {} bytes is too short; pass what validate-config returned",
            prepared.len()
        )
    })?;
    let encoding = Encoding::from_byte(head[2]).filter(|_| head[..2] == MAGIC);
    let Some(encoding) = encoding else {
        return Err(
            "invalid prepared config: pass the bytes validate-config returned, not the JSON".into(),
        );
    };
    let mut expected = header::<C>(plugin);
    expected[2] = encoding as u8;
    if *head != expected {
        return Err(format!(
            "invalid prepared config: it was prepared by another plugin or another version than {plugin}; validate the config again"
        ));
    }
    let config: C = encoding
        .decode(body)
        .map_err(|error| format!("invalid prepared config: {error}"))?;
    config
        .verify()
        .map_err(|problem| format!("invalid prepared config: {problem}"))?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Points {
        points: i64,
        #[serde(default)]
        reason: Option<String>,
    }

    impl PluginConfig for Points {
        fn verify(&self) -> Result<(), String> {
            (self.points >= 0)
                .then_some(())
                .ok_or_else(|| "points must not be negative".into())
        }
    }

    #[test]
    fn a_config_round_trips_through_its_prepared_bytes() {
        let prepared = prepare::<Points>(r#"{"points": 5}"#, "p@1").unwrap();
        assert_eq!(
            prepared.attributes, None,
            "the default reads every attribute"
        );
        let config: Points = load(&prepared.config, "p@1").unwrap();
        assert_eq!(
            config,
            Points {
                points: 5,
                reason: None
            }
        );
    }

    #[test]
    fn json_errors_are_config_problems() {
        let problems = prepare::<Points>(r#"{"points": "five"}"#, "p@1").unwrap_err();
        assert!(
            problems[0].message.starts_with("invalid config"),
            "{problems:?}"
        );
    }

    #[test]
    fn foreign_damaged_or_unverified_bytes_are_errors() {
        let prepared = prepare::<Points>(r#"{"points": 5}"#, "p@1").unwrap().config;
        let error = load::<Points>(&prepared, "p@2").unwrap_err();
        assert!(error.contains("another version"), "{error}");
        assert!(load::<Points>(br#"{"points": 5}"#, "p@1").is_err());
        assert!(load::<Points>(&prepared[..5], "p@1").is_err());
        for cut in HEADER_BYTES..prepared.len() {
            assert!(load::<Points>(&prepared[..cut], "p@1").is_err());
        }
        let mut unknown_encoding = prepared.clone();
        unknown_encoding[2] = 9;
        let error = load::<Points>(&unknown_encoding, "p@1").unwrap_err();
        assert!(error.contains("not the JSON"), "{error}");
        let mut trailing = prepared.clone();
        trailing.push(0);
        assert!(load::<Points>(&trailing, "p@1").is_err());
        let negative = Points {
            points: -1,
            reason: None,
        };
        for encoding in [Encoding::Postcard, Encoding::MessagePack] {
            let bytes = encoding.encode(header::<Points>("p@1"), &negative).unwrap();
            let error = load::<Points>(&bytes, "p@1").unwrap_err();
            assert!(error.contains("must not be negative"), "{error}");
        }
    }

    /// "A number or a list of numbers", read the way JSON allows: only a self-describing
    /// encoding can decode it.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(untagged)]
    enum OneOrList {
        One(i64),
        List(Vec<i64>),
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Limits {
        limit: OneOrList,
    }
    impl PluginConfig for Limits {}

    #[test]
    fn configs_prepare_in_postcard_unless_their_types_need_messagepack() {
        let plain = prepare::<Points>(r#"{"points": 5, "reason": "form"}"#, "p@1")
            .unwrap()
            .config;
        assert_eq!(plain[2], Encoding::Postcard as u8);
        let untagged = prepare::<Limits>(r#"{"limit": [1, 2]}"#, "p@1")
            .unwrap()
            .config;
        assert_eq!(untagged[2], Encoding::MessagePack as u8);
        assert_eq!(
            load::<Limits>(&untagged, "p@1").unwrap(),
            Limits {
                limit: OneOrList::List(vec![1, 2])
            }
        );
    }

    #[test]
    fn a_config_that_does_not_read_back_is_refused_at_publish_time() {
        /// "An object or a list", told apart the way JSON allows but prepared bytes do not.
        #[derive(Debug, Serialize)]
        #[serde(untagged)]
        enum OneOrMany {
            One(Points),
            Many(Vec<Points>),
        }
        impl<'de> Deserialize<'de> for OneOrMany {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                struct Either;
                impl<'de> serde::de::Visitor<'de> for Either {
                    type Value = OneOrMany;
                    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                        f.write_str("an object or a list")
                    }
                    fn visit_map<A: serde::de::MapAccess<'de>>(
                        self,
                        map: A,
                    ) -> Result<OneOrMany, A::Error> {
                        Points::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                            .map(OneOrMany::One)
                    }
                    fn visit_seq<A: serde::de::SeqAccess<'de>>(
                        self,
                        seq: A,
                    ) -> Result<OneOrMany, A::Error> {
                        Vec::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                            .map(OneOrMany::Many)
                    }
                }
                deserializer.deserialize_any(Either)
            }
        }
        #[derive(Debug, Serialize, Deserialize)]
        struct Sends {
            send: OneOrMany,
        }
        impl PluginConfig for Sends {}
        // A lone object becomes a list of its fields when prepared, and reads back as a list.
        let problems = prepare::<Sends>(r#"{"send": {"points": 1}}"#, "p@1").unwrap_err();
        assert!(problems[0].message.contains("read back"), "{problems:?}");
        assert!(prepare::<Sends>(r#"{"send": [{"points": 1}]}"#, "p@1").is_ok());
    }

    #[test]
    fn a_config_names_the_attributes_it_reads() {
        #[derive(Debug, Serialize, Deserialize)]
        struct Threshold {
            attribute: String,
        }
        impl PluginConfig for Threshold {
            fn attributes(&self) -> Option<Vec<String>> {
                Some(vec![self.attribute.clone()])
            }
        }
        let prepared = prepare::<Threshold>(r#"{"attribute": "company_size"}"#, "p@1").unwrap();
        assert_eq!(prepared.attributes, Some(vec!["company_size".to_owned()]));
    }

    #[test]
    fn no_config_accepts_any_document() {
        for json in ["{}", r#"{"anything": [1, 2]}"#, "null"] {
            let prepared = prepare::<NoConfig>(json, "p@1").unwrap();
            assert_eq!(load::<NoConfig>(&prepared.config, "p@1").unwrap(), NoConfig);
        }
        assert!(prepare::<NoConfig>("not json", "p@1").is_err());
    }
}

//! Names and sentences in a config (event names, property and attribute names, reasons), kept
//! as bytes so that decoding a prepared config does not check every one of them for UTF-8.
//!
//! A prepared config is decoded on every call, and most of its text is only ever compared with
//! an event's name or a property's, byte for byte; checking all of it cost more than the rest of
//! the decoding. In JSON a `Text` is a string like any other; in the binary encodings it is a
//! byte string (the same bytes on the wire in postcard). Text that turns out not to be UTF-8,
//! which only bytes the plugin did not prepare could hold, matches nothing and reads as `�`.

use std::fmt;

use serde::de::{self, Deserialize, Deserializer, Visitor};
use serde::ser::{Serialize, Serializer};

/// Text from a config, checked for UTF-8 only where it is used as text.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Text(Vec<u8>);

impl Text {
    /// Whether this is exactly `text`.
    pub fn is(&self, text: &str) -> bool {
        self.0 == text.as_bytes()
    }

    /// The text, if it is UTF-8 (always, for a config this plugin prepared).
    pub fn as_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The text as an owned string, any invalid bytes replaced.
    pub fn to_string_lossy(&self) -> String {
        String::from_utf8_lossy(&self.0).into_owned()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl AsRef<[u8]> for Text {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl From<String> for Text {
    fn from(text: String) -> Self {
        Text(text.into_bytes())
    }
}

impl From<&str> for Text {
    fn from(text: &str) -> Self {
        Text(text.as_bytes().to_vec())
    }
}

impl fmt::Display for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&String::from_utf8_lossy(&self.0))
    }
}

impl fmt::Debug for Text {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&String::from_utf8_lossy(&self.0), f)
    }
}

impl Serialize for Text {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            let text = self
                .as_str()
                .ok_or_else(|| serde::ser::Error::custom("config text is not UTF-8"))?;
            serializer.serialize_str(text)
        } else {
            serializer.serialize_bytes(&self.0)
        }
    }
}

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            deserializer.deserialize_string(TextVisitor)
        } else {
            deserializer.deserialize_byte_buf(TextVisitor)
        }
    }
}

struct TextVisitor;

impl<'de> Visitor<'de> for TextVisitor {
    type Value = Text;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_str<E: de::Error>(self, text: &str) -> Result<Text, E> {
        Ok(Text::from(text))
    }

    fn visit_string<E: de::Error>(self, text: String) -> Result<Text, E> {
        Ok(Text::from(text))
    }

    fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Text, E> {
        Ok(Text(bytes.to_vec()))
    }

    fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Text, E> {
        Ok(Text(bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_is_a_string_in_json_and_bytes_in_postcard() {
        let text: Text = serde_json::from_str(r#""page_viewed""#).unwrap();
        assert!(text.is("page_viewed") && !text.is("page"));
        assert_eq!(serde_json::to_string(&text).unwrap(), r#""page_viewed""#);
        let bytes = postcard::to_allocvec(&text).unwrap();
        assert_eq!(
            bytes,
            postcard::to_allocvec("page_viewed").unwrap(),
            "the same bytes on the wire as a string"
        );
        assert_eq!(postcard::from_bytes::<Text>(&bytes).unwrap(), text);
    }

    #[test]
    fn bytes_that_are_not_utf8_match_nothing_and_read_as_replacement() {
        let bad = Text(vec![b'a', 0xff]);
        assert!(!bad.is("a"));
        assert_eq!(bad.as_str(), None);
        assert_eq!(bad.to_string(), "a\u{fffd}");
        assert!(serde_json::to_string(&bad).is_err());
    }
}

//! Links a message carries back to the server: the open pixel, tracked clicks and the
//! one-click unsubscribe (RFC 8058). Each is a token signed with HMAC-SHA256 over what it is
//! for, the message and (for a click) the URL: a token cannot be made for another message or
//! another URL, so a click redirects only to a URL that was in that message.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// Bytes of the HMAC a token keeps: 128 bits, as much as a forger would have to guess.
const TAG_BYTES: usize = 16;

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Open,
    Click,
    Unsubscribe,
}

impl Purpose {
    fn byte(self) -> u8 {
        match self {
            Purpose::Open => b'o',
            Purpose::Click => b'c',
            Purpose::Unsubscribe => b'u',
        }
    }
}

/// What a valid token names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    pub message_id: String,
    /// The URL, for a click.
    pub url: Option<String>,
}

/// Signs and checks tokens, and writes the links a message carries.
#[derive(Clone)]
pub struct Links {
    key: [u8; 32],
    /// Where the server is reached from outside, e.g. `https://mail.example.com`.
    base: String,
}

impl std::fmt::Debug for Links {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Links({})", self.base)
    }
}

impl Links {
    pub fn new(key: [u8; 32], base: &str) -> Self {
        Links {
            key,
            base: base.trim_end_matches('/').to_owned(),
        }
    }

    fn tag(&self, purpose: Purpose, payload: &[u8]) -> [u8; TAG_BYTES] {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(&[purpose.byte()]);
        mac.update(payload);
        let full = mac.finalize().into_bytes();
        full[..TAG_BYTES].try_into().expect("16 of 32 bytes")
    }

    /// A token for `purpose` on message `message_id` (and `url`, for a click).
    pub fn token(&self, purpose: Purpose, message_id: &str, url: Option<&str>) -> String {
        let mut payload = message_id.as_bytes().to_vec();
        if let Some(url) = url {
            payload.push(0);
            payload.extend_from_slice(url.as_bytes());
        }
        let tag = self.tag(purpose, &payload);
        format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(&payload),
            URL_SAFE_NO_PAD.encode(tag)
        )
    }

    /// What a token names, if it is one this server signed for `purpose`.
    pub fn check(&self, purpose: Purpose, token: &str) -> Option<Signed> {
        let (payload, tag) = token.split_once('.')?;
        let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        if tag.len() != TAG_BYTES {
            return None;
        }
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.key).expect("any key length");
        mac.update(&[purpose.byte()]);
        mac.update(&payload);
        // Constant time, and only the kept part of the tag.
        mac.verify_truncated_left(&tag).ok()?;
        let text = String::from_utf8(payload).ok()?;
        let (message_id, url) = match (purpose, text.split_once('\0')) {
            (Purpose::Click, Some((id, url))) => (id.to_owned(), Some(url.to_owned())),
            (Purpose::Click, None) => return None,
            (_, None) => (text, None),
            (_, Some(_)) => return None,
        };
        Some(Signed { message_id, url })
    }

    pub fn open_url(&self, message_id: &str) -> String {
        format!(
            "{}/t/open/{}",
            self.base,
            self.token(Purpose::Open, message_id, None)
        )
    }

    pub fn click_url(&self, message_id: &str, url: &str) -> String {
        format!(
            "{}/t/click/{}",
            self.base,
            self.token(Purpose::Click, message_id, Some(url))
        )
    }

    pub fn unsubscribe_url(&self, message_id: &str) -> String {
        format!(
            "{}/unsubscribe/{}",
            self.base,
            self.token(Purpose::Unsubscribe, message_id, None)
        )
    }

    /// `html` with each `href="http(s)://…"` going through a tracked click, and the open
    /// pixel before `</body>` (or at the end).
    pub fn track_html(&self, message_id: &str, html: &str, unsubscribe: Option<&str>) -> String {
        const HREF: &str = "href=\"";
        let mut out = String::with_capacity(html.len() + 256);
        let mut rest = html;
        while let Some(start) = rest.find(HREF) {
            let after = &rest[start + HREF.len()..];
            let Some(end) = after.find('"') else { break };
            let url = &after[..end];
            out.push_str(&rest[..start + HREF.len()]);
            // The template engine escaped the URL for HTML; the click goes to the URL itself.
            let plain = unescape(url);
            let tracked = (plain.starts_with("https://") || plain.starts_with("http://"))
                && Some(plain.as_str()) != unsubscribe;
            if tracked {
                out.push_str(&self.click_url(message_id, &plain));
            } else {
                out.push_str(url);
            }
            out.push('"');
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        let pixel = format!(
            "<img src=\"{}\" width=\"1\" height=\"1\" alt=\"\" style=\"display:none\">",
            self.open_url(message_id)
        );
        match out.rfind("</body>") {
            Some(at) => out.insert_str(at, &pixel),
            None => out.push_str(&pixel),
        }
        out
    }
}

/// The characters minijinja escapes in HTML, escaped as it does.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#x27;"),
            '/' => out.push_str("&#x2f;"),
            c => out.push(c),
        }
    }
    out
}

/// An HTML attribute's text as written before escaping: the named entities and numeric
/// character references (decimal and hex).
fn unescape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('&') {
        out.push_str(&rest[..at]);
        rest = &rest[at..];
        let Some(end) = rest[..rest.len().min(12)].find(';') else {
            out.push('&');
            rest = &rest[1..];
            continue;
        };
        let entity = &rest[1..end];
        let decoded = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            _ => entity
                .strip_prefix("#x")
                .or_else(|| entity.strip_prefix("#X"))
                .map(|hex| u32::from_str_radix(hex, 16))
                .or_else(|| entity.strip_prefix('#').map(str::parse::<u32>))
                .and_then(Result::ok)
                .and_then(char::from_u32),
        };
        match decoded {
            Some(c) => {
                out.push(c);
                rest = &rest[end + 1..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn links() -> Links {
        Links::new([7; 32], "https://wayline.example.com/")
    }

    #[test]
    fn a_token_names_its_message_and_url_and_cannot_be_turned_to_another() {
        let links = links();
        let token = links.token(Purpose::Click, "m1", Some("https://shop.example.com/a"));
        let signed = links.check(Purpose::Click, &token).unwrap();
        assert_eq!(signed.message_id, "m1");
        assert_eq!(signed.url.as_deref(), Some("https://shop.example.com/a"));
        // Another purpose, another key, a changed payload or tag: refused.
        assert!(links.check(Purpose::Open, &token).is_none());
        assert!(links.check(Purpose::Unsubscribe, &token).is_none());
        assert!(
            Links::new([8; 32], "x")
                .check(Purpose::Click, &token)
                .is_none()
        );
        let (_, tag) = token.split_once('.').unwrap();
        let swapped = format!(
            "{}.{tag}",
            URL_SAFE_NO_PAD.encode(b"m2\0https://evil.example")
        );
        assert!(links.check(Purpose::Click, &swapped).is_none());
        let other = links.token(Purpose::Open, "m2", None);
        let (payload, _) = other.split_once('.').unwrap();
        let (_, tag) = links
            .token(Purpose::Open, "m1", None)
            .split_once('.')
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .unwrap();
        assert!(
            links
                .check(Purpose::Open, &format!("{payload}.{tag}"))
                .is_none()
        );
        assert!(links.check(Purpose::Open, "garbage").is_none());
        assert!(links.check(Purpose::Open, ".").is_none());
    }

    #[test]
    fn html_links_are_tracked_and_the_pixel_goes_before_the_end_of_the_body() {
        let links = links();
        let html = "<body><a href=\"https://shop.example.com/?a=1&amp;b=2&amp;next=&#x2f;cart&#x27;s\">Shop</a> <a href=\"mailto:x@y\">m</a></body>";
        let tracked = links.track_html("m1", html, None);
        assert!(tracked.contains("https://wayline.example.com/t/click/"));
        assert!(tracked.contains("href=\"mailto:x@y\""));
        assert!(tracked.contains("/t/open/"));
        assert!(tracked.ends_with("</body>"));
        let click = tracked
            .split("/t/click/")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let signed = links.check(Purpose::Click, click).unwrap();
        assert_eq!(
            signed.url.as_deref(),
            Some("https://shop.example.com/?a=1&b=2&next=/cart's")
        );
        assert_eq!(unescape(&escape("a/b'c&d<\"")), "a/b'c&d<\"");
        assert_eq!(unescape("&bogus; &#xZZ; &"), "&bogus; &#xZZ; &");
    }
}

//! What an analyst sees of contact data: phone numbers and email addresses masked
//! (`138****5678`, `l***@example.com`) wherever they appear in a response, so reports can be
//! read and shared without exposing who the contacts are.

use serde_json::Value;

/// Mask every email address and phone number in the strings of `value`.
pub fn mask_json(value: &mut Value) {
    match value {
        Value::String(text) => {
            if let Some(masked) = mask_text(text) {
                *text = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_json),
        Value::Object(fields) => fields.values_mut().for_each(mask_json),
        _ => {}
    }
}

/// `text` with its email addresses and phone numbers masked; `None` when it has none.
pub fn mask_text(text: &str) -> Option<String> {
    if let Some(phone) = mask_phone(text) {
        return Some(phone);
    }
    if !text.contains('@') && !has_long_digit_run(text) {
        return None;
    }
    // Within longer text: each whitespace-separated word that is an address or a number.
    let mut out = String::with_capacity(text.len());
    let mut changed = false;
    let mut rest = text;
    while !rest.is_empty() {
        let start = rest
            .find(|c: char| !c.is_whitespace())
            .unwrap_or(rest.len());
        out.push_str(&rest[..start]);
        rest = &rest[start..];
        let end = rest.find(char::is_whitespace).unwrap_or(rest.len());
        let word = &rest[..end];
        let core = word.trim_matches(|c: char| "<>()[]{},;:\"'`.!?".contains(c));
        let masked = mask_email(core).or_else(|| mask_phone(core));
        match masked {
            Some(masked) => {
                let at = word.find(core).unwrap_or(0);
                out.push_str(&word[..at]);
                out.push_str(&masked);
                out.push_str(&word[at + core.len()..]);
                changed = true;
            }
            None => out.push_str(word),
        }
        rest = &rest[end..];
    }
    changed.then_some(out)
}

fn has_long_digit_run(text: &str) -> bool {
    let mut run = 0;
    for c in text.chars() {
        run = if c.is_ascii_digit() { run + 1 } else { 0 };
        if run >= 7 {
            return true;
        }
    }
    false
}

/// `l***@example.com` for `lei@example.com`: the first character of the local part only.
fn mask_email(text: &str) -> Option<String> {
    let (local, domain) = text.rsplit_once('@')?;
    let first = local.chars().next()?;
    let valid_domain = domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '.' || c == '-');
    if !valid_domain || local.chars().any(|c| c.is_whitespace() || c == '@') {
        return None;
    }
    Some(format!("{first}***@{domain}"))
}

/// `138****5678` for `13812345678`: a whole string that is a phone number (7 to 15 digits,
/// perhaps with `+`, spaces, dashes, dots and parentheses) keeps its first three and last four
/// digits. A date (`2026-12-04`) is not a phone number.
fn mask_phone(text: &str) -> Option<String> {
    let text = text.trim();
    if !text
        .chars()
        .all(|c| c.is_ascii_digit() || " +-().".contains(c))
    {
        return None;
    }
    let digits: Vec<char> = text.chars().filter(char::is_ascii_digit).collect();
    if !(7..=15).contains(&digits.len()) || looks_like_date(text) {
        return None;
    }
    let plus = if text.starts_with('+') { "+" } else { "" };
    let hidden = digits.len() - 7;
    let head: String = digits[..3].iter().collect();
    let tail: String = digits[digits.len() - 4..].iter().collect();
    Some(format!("{plus}{head}{}{tail}", "*".repeat(hidden.max(1))))
}

fn looks_like_date(text: &str) -> bool {
    let parts: Vec<&str> = text.split(['-', '.']).collect();
    parts.len() == 3
        && parts[0].len() == 4
        && parts[1].len() <= 2
        && parts[2].len() <= 2
        && parts.iter().all(|p| p.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_as_the_domain_describes() {
        assert_eq!(mask_text("13812345678").as_deref(), Some("138****5678"));
        assert_eq!(
            mask_text("lei@example.com").as_deref(),
            Some("l***@example.com")
        );
        assert_eq!(
            mask_text("+86 138 1234 5678").as_deref(),
            Some("+861******5678")
        );
    }

    #[test]
    fn masks_inside_text_and_leaves_the_rest() {
        assert_eq!(
            mask_text("sent to <lei@example.com>, call 13812345678.").as_deref(),
            Some("sent to <l***@example.com>, call 138****5678.")
        );
        for plain in [
            "2026-12-04",
            "c_0a1b2c3d4e5f",
            "journey welcome v3",
            "user@",
            "@home",
            "2026-12-04T05:08:26Z",
            "12345",
        ] {
            assert_eq!(mask_text(plain), None, "{plain}");
        }
    }

    #[test]
    fn walks_the_whole_document() {
        let mut value = serde_json::json!({
            "id": "c_1",
            "attributes": {"email": "ann@example.org", "phone": "13912345678", "plan": "pro"},
            "messages": [{"to": "ann@example.org"}],
            "count": 13912345678_u64,
        });
        mask_json(&mut value);
        assert_eq!(value["attributes"]["email"], "a***@example.org");
        assert_eq!(value["attributes"]["phone"], "139****5678");
        assert_eq!(value["attributes"]["plan"], "pro");
        assert_eq!(value["messages"][0]["to"], "a***@example.org");
        assert_eq!(value["id"], "c_1");
    }
}

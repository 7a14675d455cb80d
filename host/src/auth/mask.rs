//! What an analyst sees of contact data: phone numbers and email addresses masked
//! (`138****5678`, `l***@example.com`) wherever they appear in a response, so reports can be
//! read and shared without exposing who the contacts are.

use serde_json::Value;

/// Mask every email address and phone number in the strings of `value`, and any number
/// under a key that names a phone (`phone`, `mobile`, `msisdn`): a phone stored as a number.
pub fn mask_json(value: &mut Value) {
    match value {
        Value::String(text) => {
            if let Some(masked) = mask_text(text) {
                *text = masked;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_json),
        Value::Object(fields) => {
            for (key, field) in fields.iter_mut() {
                if let Value::Number(number) = field
                    && names_a_phone(key)
                {
                    let digits = number.to_string();
                    *field = Value::String(mask_phone(&digits).unwrap_or_else(|| "***".into()));
                    continue;
                }
                mask_json(field);
            }
        }
        _ => {}
    }
}

fn names_a_phone(key: &str) -> bool {
    let key = key.to_ascii_lowercase();
    ["phone", "mobile", "msisdn", "cell"]
        .iter()
        .any(|name| key.contains(name))
        || key == "tel"
}

/// `text` with its email addresses and phone numbers masked; `None` when it has none.
pub fn mask_text(text: &str) -> Option<String> {
    if let Some(phone) = mask_phone(text) {
        return Some(phone);
    }
    let emails = mask_emails(text);
    let phones = mask_phones(emails.as_deref().unwrap_or(text));
    phones.or(emails)
}

/// Every `local@domain.tld` inside `text`, wherever it stands (in a list, in markup, in a
/// query string), as `l***@domain.tld`.
fn mask_emails(text: &str) -> Option<String> {
    if !text.contains('@') {
        return None;
    }
    let local = |c: char| c.is_alphanumeric() || "._%+-".contains(c);
    let domain = |c: char| c.is_alphanumeric() || c == '.' || c == '-';
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for at in 0..chars.len() {
        if chars[at] != '@' || at < copied {
            continue;
        }
        let mut start = at;
        while start > copied && local(chars[start - 1]) {
            start -= 1;
        }
        let mut end = at + 1;
        while end < chars.len() && domain(chars[end]) {
            end += 1;
        }
        while end > at + 1 && matches!(chars[end - 1], '.' | '-') {
            end -= 1;
        }
        let host: String = chars[at + 1..end].iter().collect();
        if start == at || !host.contains('.') || host.starts_with('.') {
            continue;
        }
        out.extend(&chars[copied..start]);
        out.push(chars[start]);
        out.push_str("***@");
        out.push_str(&host);
        copied = end;
    }
    if copied == 0 {
        return None;
    }
    out.extend(&chars[copied..]);
    Some(out)
}

/// Every phone number inside `text`: a run of digits, spaces, `+`, `-`, `.` and parentheses
/// with 7 to 15 digits that stands on its own (not inside an id like `msg_13812345678` or a
/// UUID, not a date).
fn mask_phones(text: &str) -> Option<String> {
    if text.chars().filter(char::is_ascii_digit).count() < 7 {
        return None;
    }
    let phone = |c: char| c.is_ascii_digit() || " +-().".contains(c);
    let opens = |c: char| c.is_whitespace() || "(<[{\"'=:,;".contains(c);
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let (mut copied, mut i) = (0, 0);
    while i < chars.len() {
        let starts =
            (chars[i].is_ascii_digit() || chars[i] == '+') && (i == 0 || opens(chars[i - 1]));
        if !starts {
            i += 1;
            continue;
        }
        let mut end = i;
        while end < chars.len() && phone(chars[end]) {
            end += 1;
        }
        let mut stop = end;
        while stop > i && !chars[stop - 1].is_ascii_digit() {
            stop -= 1;
        }
        let stands_alone = chars
            .get(stop)
            .is_none_or(|c| !c.is_alphanumeric() && *c != '_');
        let run: String = chars[i..stop].iter().collect();
        if let Some(masked) = mask_phone(&run).filter(|_| stands_alone) {
            out.extend(&chars[copied..i]);
            out.push_str(&masked);
            copied = stop;
        }
        i = end.max(i + 1);
    }
    if copied == 0 {
        return None;
    }
    out.extend(&chars[copied..]);
    Some(out)
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
    fn masks_what_stands_next_to_other_text() {
        for (text, masked) in [
            ("a@x.com,b@y.com", "a***@x.com,b***@y.com"),
            ("<p>lei@example.com</p>", "<p>l***@example.com</p>"),
            ("to=lei@example.com&x=1", "to=l***@example.com&x=1"),
            ("call 138-1234-5678 today", "call 138****5678 today"),
            ("+86 138 1234 5678 (mobile)", "+861******5678 (mobile)"),
            (
                "phones: 13812345678, 13912345678",
                "phones: 138****5678, 139****5678",
            ),
        ] {
            assert_eq!(mask_text(text).as_deref(), Some(masked), "{text}");
        }
        for plain in [
            "550e8400-e29b-41d4-a716-446655440000",
            "msg_13812345678",
            "5fb655e44143f195594a8cc4832cacb7bfd9e43f3e60ba1bab1484f402ff627d",
            "2026-11-22T09:00:00.000Z",
            "12345678abc",
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
            "mobile": 13812345678_u64,
        });
        mask_json(&mut value);
        assert_eq!(value["attributes"]["email"], "a***@example.org");
        assert_eq!(value["attributes"]["phone"], "139****5678");
        assert_eq!(value["attributes"]["plan"], "pro");
        assert_eq!(value["messages"][0]["to"], "a***@example.org");
        assert_eq!(value["id"], "c_1");
        // A count is a count; a number under a phone's name is a phone.
        assert_eq!(value["count"], 13912345678_u64);
        assert_eq!(value["mobile"], "138****5678");
    }
}

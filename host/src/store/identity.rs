//! How a contact is recognised across channels: the same email or phone is the same person.

/// An email address as an identity: trimmed and lower-cased; `None` if it is not an address.
pub fn normalize_email(email: &str) -> Option<String> {
    let email = email.trim().to_lowercase();
    let (local, domain) = email.split_once('@')?;
    (!local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !email.contains(char::is_whitespace))
    .then_some(email)
}

/// A phone number as an identity: digits only, with a leading `+` kept; `None` if too short.
/// "+86 138-0013-8000" and "+8613800138000" are the same person.
pub fn normalize_phone(phone: &str) -> Option<String> {
    let trimmed = phone.trim();
    let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
    if digits.len() < 5
        || trimmed
            .chars()
            .any(|c| !(c.is_ascii_digit() || " +-().".contains(c)))
    {
        return None;
    }
    Some(if trimmed.starts_with('+') {
        format!("+{digits}")
    } else {
        digits
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_compared_case_and_space_insensitively() {
        assert_eq!(
            normalize_email("  Li.Wei@Example.COM "),
            Some("li.wei@example.com".into())
        );
        assert_eq!(normalize_email("not-an-email"), None);
        assert_eq!(normalize_email("a@localhost"), None);
    }

    #[test]
    fn phones_keep_digits_and_the_plus() {
        assert_eq!(
            normalize_phone("+86 138-0013-8000"),
            Some("+8613800138000".into())
        );
        assert_eq!(
            normalize_phone("(010) 6552 9988"),
            Some("01065529988".into())
        );
        assert_eq!(normalize_phone("call me"), None);
        assert_eq!(normalize_phone("12"), None);
    }
}

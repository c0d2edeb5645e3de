//! Validated values: "parse, don't validate". Each type can only be built through
//! `parse`, which trims and checks its input once, at the edge; nothing past it sees
//! unvalidated data. A failed parse says what is wrong in words a person can act on.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::Serialize;

macro_rules! text_value {
    ($(#[$meta:meta])* $name:ident, max = $max:expr, what = $what:literal) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
        #[serde(transparent)]
        pub struct $name(String);

        impl $name {
            /// The longest value accepted, in characters.
            pub const MAX_CHARS: usize = $max;

            /// Trims `text` and checks it is not empty and not too long.
            ///
            /// # Errors
            /// A message naming what is wrong.
            pub fn parse(text: &str) -> Result<Self, String> {
                let text = text.trim();
                if text.is_empty() {
                    return Err(concat!($what, " is required").to_owned());
                }
                let chars = text.chars().count();
                if chars > $max {
                    return Err(format!(concat!($what, " is {} characters; at most {} are allowed"), chars, $max));
                }
                if text.chars().any(|c| c.is_control() && c != '\n' && c != '\r' && c != '\t') {
                    return Err(concat!($what, " contains control characters").to_owned());
                }
                Ok(Self(text.to_owned()))
            }

            /// The value as text.
            #[must_use]
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// The value as an owned string.
            #[must_use]
            pub fn into_inner(self) -> String {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

text_value!(
    /// A person's or lead's name.
    PersonName, max = 200, what = "name"
);
text_value!(
    /// Where a lead came from (a portal, a referral, ...).
    LeadSource, max = 100, what = "source"
);
text_value!(
    /// Why an admin logs in as someone.
    Reason, max = 500, what = "reason"
);
text_value!(
    /// The text of a note on a lead.
    NoteBody, max = 10_000, what = "note"
);
text_value!(
    /// A task's title.
    TaskTitle, max = 200, what = "title"
);
text_value!(
    /// What a call, email or text was about.
    Summary, max = 2_000, what = "summary"
);
text_value!(
    /// A template's name.
    TemplateName, max = 100, what = "name"
);
text_value!(
    /// An email template's subject line.
    TemplateSubject, max = 200, what = "subject"
);
text_value!(
    /// A template's body.
    TemplateBody, max = 20_000, what = "body"
);
text_value!(
    /// A site's name.
    SiteName, max = 200, what = "name"
);

/// An email address, stored lower-cased.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Checks the shape `local@domain.tld` (no spaces, at most 254 characters).
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim().to_lowercase();
        if text.is_empty() {
            return Err("email is required".into());
        }
        if text.len() > 254 {
            return Err("email is longer than 254 characters".into());
        }
        let valid = text.split_once('@').is_some_and(|(local, domain)| {
            !local.is_empty()
                && local.len() <= 64
                && !domain.contains('@')
                && domain.contains('.')
                && !domain.starts_with(['.', '-'])
                && !domain.ends_with(['.', '-'])
                && !domain.contains("..")
                && domain
                    .chars()
                    .all(|c| c.is_alphanumeric() || c == '.' || c == '-')
                && !local
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || "<>()[],;:\"\\".contains(c))
        });
        if valid {
            Ok(Self(text))
        } else {
            Err(format!("{text:?} is not an email address"))
        }
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A phone number as people write it: digits with an optional leading `+`, and
/// spaces, dots, dashes or parentheses between them; 7 to 15 digits.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Phone(String);

impl Phone {
    /// Checks the shape and the number of digits; keeps the number as written.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("phone is required".into());
        }
        let body = text.strip_prefix('+').unwrap_or(text);
        let allowed = body
            .chars()
            .all(|c| c.is_ascii_digit() || " .-()".contains(c));
        let digits = body.chars().filter(char::is_ascii_digit).count();
        if !allowed || !(7..=15).contains(&digits) {
            return Err(format!("{text:?} is not a phone number (7 to 15 digits)"));
        }
        Ok(Self(text.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A tag on a lead: 1 to 40 characters, no commas, compared as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Tag(String);

impl Tag {
    /// The longest tag accepted, in characters.
    pub const MAX_CHARS: usize = 40;

    /// Trims and checks one tag.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let text = text.trim();
        if text.is_empty() {
            return Err("a tag cannot be empty".into());
        }
        if text.chars().count() > Self::MAX_CHARS {
            return Err(format!(
                "tag {text:?} is longer than {} characters",
                Self::MAX_CHARS
            ));
        }
        if text.chars().any(|c| c == ',' || c.is_control()) {
            return Err(format!(
                "tag {text:?} contains a comma or a control character"
            ));
        }
        Ok(Self(text.to_owned()))
    }

    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A lead's tags: at most 20, without duplicates, in the order given.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct Tags(Vec<Tag>);

impl Tags {
    /// The most tags a lead may carry.
    pub const MAX: usize = 20;

    /// Parses every tag, drops repeats, and checks the count.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse<S: AsRef<str>>(tags: &[S]) -> Result<Self, String> {
        let mut parsed: Vec<Tag> = Vec::with_capacity(tags.len());
        for tag in tags {
            let tag = Tag::parse(tag.as_ref())?;
            if !parsed.contains(&tag) {
                parsed.push(tag);
            }
        }
        if parsed.len() > Self::MAX {
            return Err(format!(
                "{} tags; at most {} are allowed",
                parsed.len(),
                Self::MAX
            ));
        }
        Ok(Self(parsed))
    }

    #[must_use]
    pub fn as_slice(&self) -> &[Tag] {
        &self.0
    }

    #[must_use]
    pub fn to_strings(&self) -> Vec<String> {
        self.0.iter().map(|t| t.0.clone()).collect()
    }
}

/// A task's due time: a real instant within a sane range (2000 to 2200).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct DueAt(DateTime<Utc>);

impl DueAt {
    /// Parses an RFC 3339 time and checks its range.
    ///
    /// # Errors
    /// A message saying what is wrong.
    pub fn parse(text: &str) -> Result<Self, String> {
        let at = DateTime::parse_from_rfc3339(text.trim())
            .map_err(|_| format!("{text:?} is not an RFC 3339 time, e.g. 2026-05-01T09:00:00Z"))?
            .with_timezone(&Utc);
        Self::new(at)
    }

    /// Checks the range of an already parsed time.
    ///
    /// # Errors
    /// A message when it is before 2000 or after 2200.
    pub fn new(at: DateTime<Utc>) -> Result<Self, String> {
        let year = chrono::Datelike::year(&at);
        if (2000..2200).contains(&year) {
            Ok(Self(at))
        } else {
            Err(format!(
                "due date {at} is out of range (years 2000 to 2199)"
            ))
        }
    }

    #[must_use]
    pub fn get(self) -> DateTime<Utc> {
        self.0
    }
}

/// One field's problem: validation errors name the field they are about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// A password as typed: 8 to 256 characters. Deliberately neither `Serialize` nor
/// `Display`, and its `Debug` hides it, so it cannot leak into a log or an event.
#[derive(Clone, PartialEq, Eq)]
pub struct Password(String);

impl Password {
    /// Checks the length.
    ///
    /// # Errors
    /// A message when it is shorter than 8 or longer than 256 characters.
    pub fn parse(text: &str) -> Result<Self, String> {
        match text.chars().count() {
            0..=7 => Err("password must be at least 8 characters".into()),
            257.. => Err("password must be at most 256 characters".into()),
            _ => Ok(Self(text.to_owned())),
        }
    }

    /// The secret itself, for hashing or checking only.
    #[must_use]
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_trimmed_required_and_at_most_200_characters() {
        assert_eq!(PersonName::parse("  Ann Lee ").unwrap().as_str(), "Ann Lee");
        assert!(PersonName::parse("   ").unwrap_err().contains("required"));
        assert!(PersonName::parse(&"é".repeat(200)).is_ok());
        assert!(PersonName::parse(&"é".repeat(201))
            .unwrap_err()
            .contains("201"));
        assert!(PersonName::parse("a\u{0}b").is_err());
    }

    #[test]
    fn emails_are_checked_and_lower_cased() {
        assert_eq!(
            Email::parse(" Ann.Lee+x@Example.COM ").unwrap().as_str(),
            "ann.lee+x@example.com"
        );
        for bad in [
            "",
            "ann",
            "ann@",
            "@x.com",
            "ann@x",
            "a b@x.com",
            "ann@x..com",
            "a@b@c.com",
            "ann@-x.com",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phones_need_seven_to_fifteen_digits() {
        assert!(Phone::parse("+1 (555) 010-0100").is_ok());
        assert!(Phone::parse("555.0100").is_ok());
        for bad in [
            "",
            "12345",
            "call me",
            "+1 555 0100 ext 2",
            "1234567890123456",
        ] {
            assert!(Phone::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tags_are_at_most_20_of_at_most_40_characters_without_repeats() {
        let tags = Tags::parse(&["buyer", " buyer ", "vip"]).unwrap();
        assert_eq!(tags.to_strings(), ["buyer", "vip"]);
        let many: Vec<String> = (0..21).map(|i| format!("t{i}")).collect();
        assert!(Tags::parse(&many).unwrap_err().contains("21 tags"));
        assert!(Tags::parse(&many[..20]).is_ok());
        assert!(Tags::parse(&["x".repeat(41)]).is_err());
        assert!(Tags::parse(&["a,b"]).is_err());
    }

    #[test]
    fn a_password_is_8_to_256_characters_and_never_shown() {
        assert!(Password::parse("short").is_err());
        let p = Password::parse("correct horse").unwrap();
        assert_eq!(format!("{p:?}"), "Password(<redacted>)");
        assert!(Password::parse(&"x".repeat(257)).is_err());
    }

    #[test]
    fn due_dates_must_be_rfc3339_within_range() {
        assert!(DueAt::parse("2026-05-01T09:00:00Z").is_ok());
        assert!(DueAt::parse("2026-05-01T09:00:00+02:00").is_ok());
        assert!(DueAt::parse("tomorrow").is_err());
        assert!(DueAt::parse("1999-12-31T23:59:59Z").is_err());
        assert!(DueAt::parse("2026-02-30T09:00:00Z").is_err());
    }
}

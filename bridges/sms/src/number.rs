//! Reading phone numbers as users type them and as providers write them (SPEC §3): with a
//! `+` an E.164 number, without one 3–8 digits a short code, anything else a national number
//! of `default_region`. A number must be *possible* for its country (right length); it need
//! not be assigned.

use ferry_bridge_api::BridgeError;
use phonenumber::country::Id;
use phonenumber::metadata::DATABASE;
use phonenumber::{Mode, PhoneNumber};

/// A phone number in ferry's canonical form: `+` and digits (E.164), or a short code's digits.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Number(String);

impl Number {
    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_short_code(&self) -> bool {
        !self.0.starts_with('+')
    }

    /// Reads a number as a user typed it, national numbers in `region` (ISO 3166 alpha-2).
    pub fn parse(raw: &str, region: &str) -> Result<Number, BridgeError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(BridgeError::malformed("empty phone number"));
        }
        let allowed = |c: char| c.is_ascii_digit() || " +-.()/\u{a0}".contains(c);
        if !trimmed.chars().all(allowed) {
            return Err(BridgeError::malformed(format!(
                "{trimmed:?} is not a phone number"
            )));
        }
        let digits: String = trimmed.chars().filter(char::is_ascii_digit).collect();
        let plus = trimmed.starts_with('+');
        if !plus && (3..=8).contains(&digits.len()) {
            return Ok(Number(digits));
        }
        if digits.len() > 17 {
            return Err(BridgeError::malformed(format!(
                "{trimmed:?} is too long for a phone number"
            )));
        }
        let country = if plus {
            None
        } else {
            Some(region.parse::<Id>().map_err(|_| {
                BridgeError::malformed(format!("unknown default region {region:?}"))
            })?)
        };
        let text = if plus { format!("+{digits}") } else { digits };
        let parsed = phonenumber::parse(country, &text).map_err(|e| {
            BridgeError::malformed(format!("{trimmed:?} is not a phone number: {e}"))
        })?;
        if !is_possible(&parsed) {
            return Err(BridgeError::malformed(format!(
                "{trimmed:?} has the wrong length for a number of its country"
            )));
        }
        Ok(Number(parsed.format().mode(Mode::E164).to_string()))
    }

    /// Reads a number as a provider wrote it: E.164 with or without the `+`, or a short code.
    /// Lenient: providers are trusted to send real numbers, so no length check.
    pub fn from_provider(raw: &str) -> Option<Number> {
        let digits: String = raw.chars().filter(char::is_ascii_digit).collect();
        if digits.is_empty() || digits.len() > 17 {
            return None;
        }
        if raw.trim().starts_with('+') || digits.len() > 8 {
            Some(Number(format!("+{digits}")))
        } else {
            Some(Number(digits))
        }
    }

    /// Wraps a canonical form read back from the store.
    pub fn from_canonical(s: &str) -> Number {
        Number(s.to_owned())
    }
}

impl std::fmt::Display for Number {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether the national number's length is one its country uses for some kind of number
/// (the metadata keeps lengths per kind: fixed line, mobile, toll free, …).
fn is_possible(n: &PhoneNumber) -> bool {
    let len = n.national().to_string().len() as u16;
    let Some(meta) = n.metadata(&DATABASE) else {
        return false;
    };
    let d = meta.descriptors();
    let kinds = [
        Some(d.general()),
        d.fixed_line(),
        d.mobile(),
        d.toll_free(),
        d.premium_rate(),
        d.shared_cost(),
        d.personal_number(),
        d.voip(),
        d.pager(),
        d.uan(),
        d.voicemail(),
    ];
    kinds
        .into_iter()
        .flatten()
        .any(|k| k.possible_length().contains(&len))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &str) -> Result<String, ferry_bridge_api::ErrorKind> {
        Number::parse(s, "US").map(|n| n.0).map_err(|e| e.kind)
    }

    #[test]
    fn reads_the_spellings_of_spec_section_3() {
        assert_eq!(p("+1 (201) 555-0123").as_deref(), Ok("+12015550123"));
        assert_eq!(p("(201) 555-0123").as_deref(), Ok("+12015550123"));
        assert_eq!(p("201.555.0123").as_deref(), Ok("+12015550123"));
        assert_eq!(p("+44 20 7946 0018").as_deref(), Ok("+442079460018"));
        assert_eq!(p("+49 30 901820").as_deref(), Ok("+4930901820"));
        assert_eq!(p("12345").as_deref(), Ok("12345"));
        assert_eq!(p("727").as_deref(), Ok("727"));
    }

    #[test]
    fn national_numbers_follow_the_region() {
        let n = Number::parse("020 7946 0018", "GB").map(|n| n.0);
        assert_eq!(n.as_deref().ok(), Some("+442079460018"));
    }

    #[test]
    fn impossible_numbers_are_malformed() {
        use ferry_bridge_api::ErrorKind::Malformed;
        assert_eq!(p("+1 201 555 01"), Err(Malformed)); // too short for NANP
        assert_eq!(p("+1 201 555 01234"), Err(Malformed)); // too long
        assert_eq!(p("hello"), Err(Malformed));
        assert_eq!(p(""), Err(Malformed));
        assert_eq!(p("+12"), Err(Malformed));
        assert_eq!(p("12"), Err(Malformed));
        assert_eq!(p("+999 1234567"), Err(Malformed)); // no such country code
    }

    #[test]
    fn provider_spellings() {
        assert_eq!(
            Number::from_provider("447700900000")
                .map(|n| n.0)
                .as_deref(),
            Some("+447700900000")
        );
        assert_eq!(
            Number::from_provider("+12015550100")
                .map(|n| n.0)
                .as_deref(),
            Some("+12015550100")
        );
        assert_eq!(
            Number::from_provider("12345").map(|n| n.0).as_deref(),
            Some("12345")
        );
        assert_eq!(Number::from_provider("abc"), None);
    }
}

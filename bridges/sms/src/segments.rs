//! How a text travels as SMS: GSM-7 when every character is in the GSM 03.38 alphabet
//! (160 characters in one segment, 153 per segment when split; extension characters count
//! twice), UCS-2 otherwise (70, or 67 per segment; characters beyond the BMP count twice).

/// GSM 03.38 basic character set.
const BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?\
¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
/// The extension table: each costs an escape plus itself.
const EXTENSION: &str = "\u{c}^{}\\[~]|€";

/// The encoding a text needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

impl Encoding {
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Gsm7 => "GSM-7",
            Encoding::Ucs2 => "UCS-2",
        }
    }
}

/// The encoding and segment count of a text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segments {
    pub encoding: Encoding,
    /// Code units: septets for GSM-7, 16-bit units for UCS-2.
    pub units: usize,
    pub count: usize,
}

/// Whether every character of `text` is in the GSM 03.38 alphabet (with its extension).
pub fn is_gsm7(text: &str) -> bool {
    text.chars()
        .all(|c| BASIC.contains(c) || EXTENSION.contains(c))
}

/// How `text` would be sent.
pub fn segments(text: &str) -> Segments {
    let (encoding, units, single, multi) = if is_gsm7(text) {
        let units = text
            .chars()
            .map(|c| if EXTENSION.contains(c) { 2 } else { 1 })
            .sum();
        (Encoding::Gsm7, units, 160, 153)
    } else {
        (Encoding::Ucs2, text.encode_utf16().count(), 70, 67)
    };
    let count = match units {
        0 => 1,
        n if n <= single => 1,
        n => n.div_ceil(multi),
    };
    Segments {
        encoding,
        units,
        count,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gsm7_limits() {
        assert_eq!(segments(&"a".repeat(160)).count, 1);
        assert_eq!(segments(&"a".repeat(161)).count, 2);
        assert_eq!(segments(&"a".repeat(306)).count, 2);
        assert_eq!(segments(&"a".repeat(307)).count, 3);
        assert_eq!(segments("").count, 1);
        assert_eq!(segments("hello").encoding, Encoding::Gsm7);
    }

    #[test]
    fn extension_characters_count_twice() {
        let s = segments(&"€".repeat(80));
        assert_eq!((s.encoding, s.units, s.count), (Encoding::Gsm7, 160, 1));
        assert_eq!(segments(&"€".repeat(81)).count, 2);
    }

    #[test]
    fn ucs2_limits() {
        let s = segments(&"ж".repeat(70));
        assert_eq!((s.encoding, s.count), (Encoding::Ucs2, 1));
        assert_eq!(segments(&"ж".repeat(71)).count, 2);
        assert_eq!(segments(&"ж".repeat(134)).count, 2);
        assert_eq!(segments(&"ж".repeat(135)).count, 3);
        // An emoji is two UTF-16 units.
        assert_eq!(segments(&"👋".repeat(35)).count, 1);
        assert_eq!(segments(&"👋".repeat(36)).count, 2);
    }

    #[test]
    fn one_foreign_character_switches_to_ucs2() {
        assert_eq!(segments("Grüße").encoding, Encoding::Gsm7);
        assert_eq!(segments("Grüße 👋").encoding, Encoding::Ucs2);
        assert_eq!(segments("naïve").encoding, Encoding::Ucs2);
    }
}

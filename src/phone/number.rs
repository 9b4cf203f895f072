//! Telephone numbers as a caller gives them ("+1 (555) 010-0100"), reduced to the characters a
//! phone's keypad can dial.
//!
//! Why so strict: the number ends up inside an HTTP query (`number=…`), a key sequence
//! (`key=…;…`) or a SIP NOTIFY body. A caller-controlled `&`, `;`, `=`, `@`, `/`, `%` or space
//! could add parameters, keys or change the account, so the only characters that survive are
//! digits, `*`, `#` and one leading `+`; every vendor profile then encodes those explicitly.
//! Visual separators people commonly type (spaces, dashes, dots, brackets) are dropped; anything
//! else is refused with the character and its position, so a CRM developer sees what to fix.

/// Longest number accepted, in dialable characters. E.164 allows 15 digits; PBX feature codes
/// and DTMF-style suffixes (`*72…#`) can be longer, but nothing legitimate comes near this.
pub const MAX_NUMBER_LEN: usize = 64;

/// Why a number was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NumberError {
    /// Nothing dialable was given (empty, or only separators).
    #[error("the number is empty (only digits, '*', '#' and a leading '+' can be dialled)")]
    Empty,
    /// A character that is neither dialable nor a separator.
    #[error(
        "the number contains {ch:?} at position {position}; only digits, '*', '#', a leading '+' \
         and the separators space - . ( ) [ ] are allowed"
    )]
    InvalidChar {
        /// The offending character.
        ch: char,
        /// 1-based character position in the input as given.
        position: usize,
    },
    /// A `+` after the first dialable character (or a second `+`).
    #[error("the number has a '+' at position {position}; '+' is only allowed at the start")]
    MisplacedPlus {
        /// 1-based character position in the input as given.
        position: usize,
    },
    /// More than [`MAX_NUMBER_LEN`] dialable characters.
    #[error("the number has {len} dialable characters; at most {max} are allowed")]
    TooLong {
        /// Dialable characters found.
        len: usize,
        /// The limit, [`MAX_NUMBER_LEN`].
        max: usize,
    },
    /// Only a `+` was given.
    #[error("the number has a '+' but no digits after it")]
    PlusOnly,
}

/// Reduces `input` to `[+]{0-9*#}+`: separators (space, tab, `-`, `.`, `(`, `)`, `[`, `]`) are
/// dropped, one leading `+` is kept (it may follow separators, as in `"(+49) 30 …"`), anything
/// else is an error naming the character and its 1-based position.
///
/// ```
/// use ctibridge::phone::number::normalize_number;
/// assert_eq!(normalize_number("+1 (555) 010-0100").unwrap(), "+15550100100");
/// assert_eq!(normalize_number("*72 12#").unwrap(), "*7212#");
/// assert!(normalize_number("555;key=Reboot").is_err());
/// ```
pub fn normalize_number(input: &str) -> Result<String, NumberError> {
    let mut out = String::with_capacity(input.len());
    for (i, ch) in input.chars().enumerate() {
        let position = i + 1;
        match ch {
            '0'..='9' | '*' | '#' => out.push(ch),
            '+' if out.is_empty() => out.push('+'),
            '+' => return Err(NumberError::MisplacedPlus { position }),
            ' ' | '\t' | '-' | '.' | '(' | ')' | '[' | ']' => {}
            _ => return Err(NumberError::InvalidChar { ch, position }),
        }
    }
    match out.as_str() {
        "" => Err(NumberError::Empty),
        "+" => Err(NumberError::PlusOnly),
        _ => {
            let len = out.trim_start_matches('+').len();
            if len > MAX_NUMBER_LEN {
                Err(NumberError::TooLong {
                    len,
                    max: MAX_NUMBER_LEN,
                })
            } else {
                Ok(out)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_are_dropped_and_plus_kept() {
        for (input, want) in [
            ("+1 555 0100", "+15550100"),
            ("+1 (555) 010-0100", "+15550100100"),
            ("8.800.555.35.35", "88005553535"),
            ("[030] 1234-5678", "03012345678"),
            ("(+49) 30 1234", "+49301234"),
            ("  101 ", "101"),
            ("*78", "*78"),
            ("12#34", "12#34"),
            ("*555550100#", "*555550100#"),
            ("\t+7\t495", "+7495"),
        ] {
            assert_eq!(normalize_number(input).as_deref(), Ok(want), "{input:?}");
        }
    }

    #[test]
    fn injection_characters_are_refused_with_position() {
        for (input, ch, position) in [
            ("555a", 'a', 4),
            ("555;Reboot", ';', 4),
            ("1&outgoing_uri=evil", '&', 2),
            ("1@2", '@', 2),
            ("1/2", '/', 2),
            ("1=2", '=', 2),
            ("1%26", '%', 2),
            ("1,2", ',', 2),
            ("1\r\n2", '\r', 2),
            ("1$2", '$', 2),
            ("١٢٣", '١', 1),
        ] {
            assert_eq!(
                normalize_number(input),
                Err(NumberError::InvalidChar { ch, position }),
                "{input:?}"
            );
        }
    }

    #[test]
    fn plus_only_at_the_start() {
        assert_eq!(
            normalize_number("1+2"),
            Err(NumberError::MisplacedPlus { position: 2 })
        );
        assert_eq!(
            normalize_number("++1"),
            Err(NumberError::MisplacedPlus { position: 2 })
        );
        assert_eq!(normalize_number("+"), Err(NumberError::PlusOnly));
        assert_eq!(normalize_number(""), Err(NumberError::Empty));
        assert_eq!(normalize_number(" - () "), Err(NumberError::Empty));
    }

    #[test]
    fn length_is_bounded() {
        let long = "1".repeat(MAX_NUMBER_LEN + 1);
        assert!(matches!(
            normalize_number(&long),
            Err(NumberError::TooLong { .. })
        ));
        assert!(normalize_number(&"1".repeat(MAX_NUMBER_LEN)).is_ok());
    }

    #[test]
    fn messages_name_the_problem() {
        let e = normalize_number("555-CALL").unwrap_err().to_string();
        assert!(e.contains("'C'") && e.contains("position 5"), "{e}");
    }

    proptest::proptest! {
        /// Whatever comes in, what goes out is `[+]?[0-9*#]+`.
        #[test]
        fn output_is_always_dialable(s in "\\PC{0,40}") {
            if let Ok(n) = normalize_number(&s) {
                let body = n.strip_prefix('+').unwrap_or(&n);
                proptest::prop_assert!(!body.is_empty());
                proptest::prop_assert!(body.chars().all(|c| c.is_ascii_digit() || c == '*' || c == '#'));
            }
        }
    }
}

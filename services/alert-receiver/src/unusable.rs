//! Entity values that are not usable Kubernetes names (`namespace="prod; rm -rf"`, a model
//! named `../../x`, control characters, a megabyte of text): kept on the alert for the humans
//! the incident is escalated to, quoted so they are inert wherever they are shown.

use std::fmt::Write;

use opsmesh_proto::alert::UnusableField;

/// `value` from `field`, unusable because of `reason`, cut to `max_chars` characters.
pub fn field(field: &str, value: &str, reason: String, max_chars: usize) -> UnusableField {
    let (quoted, truncated) = quote(value, max_chars);
    UnusableField {
        field: field.to_owned(),
        quoted,
        truncated,
        reason,
    }
}

/// `value` as a double-quoted literal of printable ASCII: `"` and `\` are backslashed, and
/// every other character outside printable ASCII (controls, newlines, bidirectional
/// overrides, any non-ASCII) and the markup characters `<`, `>`, `&` and `` ` `` (HTML, Slack
/// mentions and links, Markdown code) become `\u{…}`. So the text cannot break a log line,
/// reorder what a reader sees, or turn into markup or a mention. Returns whether the value
/// was longer than `max_chars` characters (only its start is quoted then).
pub fn quote(value: &str, max_chars: usize) -> (String, bool) {
    let mut quoted = String::with_capacity(value.len().min(max_chars) + 2);
    quoted.push('"');
    let mut chars = value.chars();
    for c in chars.by_ref().take(max_chars) {
        match c {
            '"' | '\\' => {
                quoted.push('\\');
                quoted.push(c);
            }
            '<' | '>' | '&' | '`' => escape(&mut quoted, c),
            ' '..='~' => quoted.push(c),
            _ => escape(&mut quoted, c),
        }
    }
    quoted.push('"');
    (quoted, chars.next().is_some())
}

fn escape(out: &mut String, c: char) {
    write!(out, "\\u{{{:x}}}", c as u32).expect("writing to a String cannot fail");
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn injection_attempts_come_out_inert_and_readable() {
        assert_eq!(
            quote("prod; rm -rf /", 64),
            (r#""prod; rm -rf /""#.into(), false)
        );
        assert_eq!(quote("../../x", 64).0, r#""../../x""#);
        assert_eq!(quote("a\"b\\c", 64).0, r#""a\"b\\c""#);
        assert_eq!(
            quote("line\nnext\r\u{7}", 64).0,
            r#""line\u{a}next\u{d}\u{7}""#
        );
        assert_eq!(
            quote("<!channel> `x` &amp;", 64).0,
            r#""\u{3c}!channel\u{3e} \u{60}x\u{60} \u{26}amp;""#
        );
        assert_eq!(quote("abc\u{202e}fed", 64).0, r#""abc\u{202e}fed""#);
        assert_eq!(quote("modèle", 64).0, r#""mod\u{e8}le""#);
    }

    #[test]
    fn long_values_are_cut_at_the_limit_in_characters() {
        let (quoted, truncated) = quote(&"é".repeat(1000), 3);
        assert_eq!(quoted, r#""\u{e9}\u{e9}\u{e9}""#);
        assert!(truncated);
        assert_eq!(quote("abc", 3), (r#""abc""#.into(), false));
    }

    proptest! {
        #[test]
        fn the_quoted_text_is_printable_ascii_without_markup(value in any::<String>(), max in 0usize..50) {
            let (quoted, truncated) = quote(&value, max);
            prop_assert!(quoted.bytes().all(|b| (b' '..=b'~').contains(&b)), "{}", quoted);
            prop_assert!(!quoted.contains(['<', '>', '&', '`']), "{}", quoted);
            prop_assert_eq!(truncated, value.chars().count() > max);
        }
    }
}

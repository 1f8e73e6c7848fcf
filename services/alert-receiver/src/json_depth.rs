//! Nesting limit checked on the raw bytes before parsing, so a hostile body cannot make the
//! parser recurse deeply.

/// Returns the first byte offset at which nesting exceeds `max`, if any.
pub fn exceeds(body: &[u8], max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut i = 0;
    while let Some(&b) = body.get(i) {
        match b {
            // Most of an alert's bytes are inside strings: jump from escape to escape.
            b'"' => {
                i += 1;
                loop {
                    let at = i + memchr::memchr2(b'"', b'\\', body.get(i..)?)?;
                    if body[at] == b'"' {
                        i = at + 1;
                        break;
                    }
                    i = at + 2;
                }
                continue;
            }
            b'[' | b'{' => {
                depth += 1;
                if depth > max {
                    return Some(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    #[test]
    fn counts_structure_not_strings() {
        assert_eq!(super::exceeds(br#"{"a":[[1]]}"#, 3), None);
        assert_eq!(super::exceeds(br#"{"a":[[[1]]]}"#, 3), Some(7));
        assert_eq!(super::exceeds(br#"{"a":"[[[[[[\"[["}"#, 1), None);
        assert_eq!(super::exceeds(br#"{"a\\":[[1]]}"#, 2), Some(8));
        assert_eq!(super::exceeds(br#"{"unterminated \"[[[[["#, 1), None);
        assert_eq!(super::exceeds(br#"{"ends in an escape \"#, 1), None);
    }

    /// The byte-at-a-time scan the fast one must agree with.
    fn reference(body: &[u8], max: usize) -> Option<usize> {
        let (mut depth, mut in_string, mut escaped) = (0usize, false, false);
        for (i, &b) in body.iter().enumerate() {
            if in_string {
                match (escaped, b) {
                    (true, _) => escaped = false,
                    (false, b'\\') => escaped = true,
                    (false, b'"') => in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => in_string = true,
                b'[' | b'{' => {
                    depth += 1;
                    if depth > max {
                        return Some(i);
                    }
                }
                b']' | b'}' => depth = depth.saturating_sub(1),
                _ => {}
            }
        }
        None
    }

    proptest! {
        #[test]
        fn agrees_with_the_byte_at_a_time_scan(
            body in proptest::collection::vec(
                prop_oneof![Just(b'"'), Just(b'\\'), Just(b'['), Just(b']'), Just(b'{'),
                            Just(b'}'), Just(b'a'), Just(b':')],
                0..64,
            ),
            max in 0usize..6,
        ) {
            prop_assert_eq!(super::exceeds(&body, max), reference(&body, max));
        }
    }
}

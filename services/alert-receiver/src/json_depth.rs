//! Nesting limit checked on the raw bytes before parsing, so a hostile body cannot make the
//! parser recurse deeply.

/// Returns the first byte offset at which nesting exceeds `max`, if any.
pub fn exceeds(body: &[u8], max: usize) -> Option<usize> {
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
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

#[cfg(test)]
mod tests {
    #[test]
    fn counts_structure_not_strings() {
        assert_eq!(super::exceeds(br#"{"a":[[1]]}"#, 3), None);
        assert_eq!(super::exceeds(br#"{"a":[[[1]]]}"#, 3), Some(7));
        assert_eq!(super::exceeds(br#"{"a":"[[[[[[\"[["}"#, 1), None);
    }
}

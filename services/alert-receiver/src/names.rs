//! Kubernetes name rules (RFC 1123), applied to every name taken from an alert.

#[derive(Debug, Clone, Copy)]
pub enum NameKind {
    /// DNS-1123 label: namespaces, InferenceServices (≤ 63).
    Label,
    /// DNS-1123 subdomain: pods, policies, applications (≤ 253).
    Subdomain,
}

pub fn validate(value: &str, kind: NameKind) -> Result<(), String> {
    let max = match kind {
        NameKind::Label => 63,
        NameKind::Subdomain => 253,
    };
    if value.is_empty() || value.len() > max {
        return Err(format!("must be 1 to {max} characters (RFC 1123)"));
    }
    let label_ok = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !label.starts_with('-')
            && !label.ends_with('-')
    };
    let ok = match kind {
        NameKind::Label => label_ok(value),
        NameKind::Subdomain => value.split('.').all(label_ok),
    };
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{value:?} is not a valid Kubernetes name (RFC 1123: lower-case letters, digits and '-'{}, starting and ending alphanumeric)",
            if matches!(kind, NameKind::Subdomain) {
                ", '.' between labels"
            } else {
                ""
            }
        ))
    }
}

/// Alertmanager fingerprints are hex strings (16 characters today).
pub fn is_fingerprint(value: &str) -> bool {
    !value.is_empty() && value.len() <= 64 && value.bytes().all(|b| b.is_ascii_hexdigit())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubernetes_names_and_rejects_injection() {
        assert!(validate("gpt-oss-120b", NameKind::Label).is_ok());
        assert!(validate("a.b-c.d", NameKind::Subdomain).is_ok());
        for bad in [
            "",
            "Upper",
            "-lead",
            "trail-",
            "a b",
            "x\"|delete",
            "a.b",
            &"x".repeat(64),
        ] {
            assert!(validate(bad, NameKind::Label).is_err(), "{bad:?}");
        }
        assert!(validate("a..b", NameKind::Subdomain).is_err());
    }
}

//! Kubernetes object names (RFC 1123), the one check every service applies to a name it did not
//! read from the cluster itself: alert fields, action targets, configuration, simulator objects.

use thiserror::Error;

/// Which RFC 1123 form a name must take.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameKind {
    /// DNS-1123 label: namespaces, InferenceServices (≤ 63).
    Label,
    /// DNS-1123 subdomain: pods, policies, applications (≤ 253).
    Subdomain,
}

impl NameKind {
    pub fn max_len(self) -> usize {
        match self {
            Self::Label => 63,
            Self::Subdomain => 253,
        }
    }
}

/// Why a name is not a Kubernetes name.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum NameError {
    #[error("must be 1 to {max} characters (RFC 1123)")]
    Length { max: usize },
    #[error(
        "{value:?} is not a valid Kubernetes name (RFC 1123: lower-case letters, digits and '-'{}, starting and ending alphanumeric)",
        if matches!(kind, NameKind::Subdomain) { ", '.' between labels" } else { "" }
    )]
    Characters { value: String, kind: NameKind },
}

/// RFC 1123 label: lowercase alphanumerics and `-`, starting and ending alphanumeric, ≤ 63.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// RFC 1123 subdomain: labels separated by dots, ≤ 253.
pub fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// Checks `value` as a `kind` name, saying what is wrong with it.
pub fn validate_name(value: &str, kind: NameKind) -> Result<(), NameError> {
    if value.is_empty() || value.len() > kind.max_len() {
        return Err(NameError::Length {
            max: kind.max_len(),
        });
    }
    let ok = match kind {
        NameKind::Label => is_dns_label(value),
        NameKind::Subdomain => is_dns_subdomain(value),
    };
    if ok {
        Ok(())
    } else {
        Err(NameError::Characters {
            value: value.to_owned(),
            kind,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_kubernetes_names_and_rejects_injection() {
        assert!(validate_name("gpt-oss-120b", NameKind::Label).is_ok());
        assert!(validate_name("a.b-c.d", NameKind::Subdomain).is_ok());
        for bad in [
            "",
            "Upper",
            "-lead",
            "trail-",
            "a b",
            "x\"|delete",
            "a.b",
            "a_b",
            &"x".repeat(64),
        ] {
            assert!(validate_name(bad, NameKind::Label).is_err(), "{bad:?}");
        }
        for bad in ["a..b", ".a", "a.", "a.-b", &"x".repeat(64)] {
            assert!(validate_name(bad, NameKind::Subdomain).is_err(), "{bad:?}");
        }
        assert!(is_dns_subdomain(&vec!["x".repeat(63); 3].join(".")));
        assert!(!is_dns_subdomain(&vec!["x".repeat(63); 5].join(".")));
    }

    #[test]
    fn errors_name_the_rule() {
        assert_eq!(
            validate_name("", NameKind::Label).unwrap_err().to_string(),
            "must be 1 to 63 characters (RFC 1123)"
        );
        let e = validate_name("A.b", NameKind::Subdomain)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("\"A.b\"") && e.contains("'.' between labels"),
            "{e}"
        );
    }
}

//! Kubernetes quantities (`256Mi`, `1Gi`, `512M`, `500m`, plain numbers).

const UNITS: &[(&str, f64)] = &[
    ("Ki", 1024.0),
    ("Mi", 1_048_576.0),
    ("Gi", 1_073_741_824.0),
    ("Ti", 1_099_511_627_776.0),
    ("k", 1e3),
    ("M", 1e6),
    ("G", 1e9),
    ("T", 1e12),
    ("m", 1e-3),
];

/// A quantity as a number (`64Mi` → 67108864, `500m` → 0.5, `2` → 2).
pub fn parse_quantity(quantity: &str) -> Option<f64> {
    let q = quantity.trim();
    if q.is_empty() || q.len() > 64 {
        return None;
    }
    for (suffix, factor) in UNITS {
        if let Some(number) = q.strip_suffix(suffix) {
            return number
                .parse::<f64>()
                .ok()
                .filter(|n| n.is_finite() && *n >= 0.0)
                .map(|n| n * factor);
        }
    }
    q.parse::<f64>().ok().filter(|n| n.is_finite() && *n >= 0.0)
}

/// A memory quantity in bytes.
pub fn parse_bytes(quantity: &str) -> Option<u64> {
    parse_quantity(quantity).map(|n| n.round() as u64)
}

/// A JSON parameter value as a number: numbers as they are, strings as quantities.
pub fn value_number(value: &serde_json::Value) -> Option<f64> {
    match value {
        serde_json::Value::Number(n) => n.as_f64(),
        serde_json::Value::String(s) => parse_quantity(s),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_quantities() {
        assert_eq!(parse_bytes("256Mi"), Some(256 << 20));
        assert_eq!(parse_bytes("1Gi"), Some(1 << 30));
        assert_eq!(parse_bytes("512M"), Some(512_000_000));
        assert_eq!(parse_quantity("500m"), Some(0.5));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(parse_bytes("-1Gi"), None);
        assert_eq!(value_number(&serde_json::json!(3)), Some(3.0));
        assert_eq!(value_number(&serde_json::json!("64Mi")), Some(67108864.0));
    }
}

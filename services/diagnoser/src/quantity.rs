//! Kubernetes memory quantities (`256Mi`, `1Gi`, `512M`, bytes).

const UNITS: &[(&str, u64)] = &[
    ("Ki", 1 << 10),
    ("Mi", 1 << 20),
    ("Gi", 1 << 30),
    ("Ti", 1 << 40),
    ("k", 1_000),
    ("M", 1_000_000),
    ("G", 1_000_000_000),
    ("T", 1_000_000_000_000),
];

pub fn parse_bytes(quantity: &str) -> Option<u64> {
    let q = quantity.trim();
    for (suffix, factor) in UNITS {
        if let Some(number) = q.strip_suffix(suffix) {
            return number
                .parse::<f64>()
                .ok()
                .map(|n| (n * *factor as f64).round() as u64);
        }
    }
    q.parse::<u64>().ok()
}

/// Bytes rounded up to a multiple of `step_mib`, written in `Mi` (or `Gi` when whole).
pub fn format_mib_rounded_up(bytes: u64, step_mib: u64) -> String {
    let mib = bytes.div_ceil(1 << 20);
    let rounded = mib.div_ceil(step_mib.max(1)) * step_mib.max(1);
    if rounded.is_multiple_of(1024) {
        format!("{}Gi", rounded / 1024)
    } else {
        format!("{rounded}Mi")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_rounds() {
        assert_eq!(parse_bytes("256Mi"), Some(256 << 20));
        assert_eq!(parse_bytes("1Gi"), Some(1 << 30));
        assert_eq!(parse_bytes("512M"), Some(512_000_000));
        assert_eq!(parse_bytes("1024"), Some(1024));
        assert_eq!(parse_bytes("lots"), None);
        assert_eq!(format_mib_rounded_up(480 << 20, 64), "512Mi");
        assert_eq!(format_mib_rounded_up((480u64 << 20) * 13 / 10, 64), "640Mi");
        assert_eq!(format_mib_rounded_up(1 << 30, 64), "1Gi");
    }
}

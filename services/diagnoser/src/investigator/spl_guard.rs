//! The check every model-written SPL search passes before it reaches Splunk: only generating
//! and reporting commands, no subsearches or macros (they expand to commands this check never
//! sees), only allowed indexes, and the time range the investigator sets, never the model.

use std::time::Duration;

use serde::Deserialize;

use opsmesh_runtime::{ConfigError, Validate};

use crate::splunk::Search;

/// `[diagnoser.investigator.splunk]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplGuardConfig {
    /// Indexes a search may name; every search must name at least one.
    pub indexes: Vec<String>,
    /// How far back a search may reach (`earliest` relative to now).
    #[serde(with = "humantime_serde")]
    pub max_lookback: Duration,
    /// `earliest` when the model gives none.
    pub default_earliest: String,
}

impl Default for SplGuardConfig {
    fn default() -> Self {
        Self {
            indexes: vec!["opsmesh".into()],
            max_lookback: Duration::from_secs(24 * 3600),
            default_earliest: "-1h".into(),
        }
    }
}

impl Validate for SplGuardConfig {
    fn validate(&self, prefix: &str) -> Result<(), ConfigError> {
        if self.indexes.is_empty() || self.indexes.iter().any(|i| i.is_empty() || i.contains('*')) {
            return Err(ConfigError::invalid(
                format!("{prefix}.indexes"),
                "must name at least one index, without wildcards",
            ));
        }
        match relative_lookback(&self.default_earliest) {
            Some(back) if back <= self.max_lookback => Ok(()),
            _ => Err(ConfigError::invalid(
                format!("{prefix}.default_earliest"),
                "must be a relative time such as -1h within max_lookback",
            )),
        }
    }
}

/// Why a search was refused; the text goes back to the model and into the record.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SplRefusal {
    #[error("the search is empty")]
    Empty,
    #[error("unbalanced quotes")]
    UnbalancedQuotes,
    #[error("`{0}` changes or exports data and is never run")]
    Forbidden(String),
    #[error(
        "`{0}` is not allowed: only search and reporting commands ({ALLOWED_LIST}) and the \
         generating commands tstats and mstats"
    )]
    NotAllowed(String),
    #[error("subsearches ([...]) are not allowed")]
    Subsearch,
    #[error("macros (`...`) are not allowed")]
    Macro,
    #[error("the search must name an index (index=...); allowed: {0}")]
    NoIndex(String),
    #[error("index {index:?} is not allowed; allowed: {allowed}")]
    IndexNotAllowed { index: String, allowed: String },
    #[error("`{0}=` in the search is not allowed: the time range is the `earliest` argument")]
    TimeModifier(String),
    #[error("earliest {0:?} must be a relative time such as -1h, -30m or -2d@d")]
    BadEarliest(String),
    #[error("earliest {earliest:?} reaches back further than the allowed {max}")]
    Lookback { earliest: String, max: String },
}

/// Commands that write, send, run code or call out. Named so the refusal says why.
const FORBIDDEN: &[&str] = &[
    "delete",
    "collect",
    "mcollect",
    "meventcollect",
    "tscollect",
    "outputlookup",
    "outputcsv",
    "outputtext",
    "sendemail",
    "sendalert",
    "script",
    "run",
    "runshellscript",
    "map",
    "rest",
    "dbxquery",
    "dbxoutput",
    "summaryindex",
    "sitimechart",
    "savedsearch",
    "loadjob",
    "dump",
];

/// Streaming and reporting commands a pipeline stage may use.
const ALLOWED: &[&str] = &[
    "search",
    "where",
    "eval",
    "stats",
    "eventstats",
    "streamstats",
    "timechart",
    "chart",
    "top",
    "rare",
    "table",
    "fields",
    "rename",
    "sort",
    "head",
    "tail",
    "dedup",
    "bin",
    "bucket",
    "fillnull",
    "spath",
    "rex",
    "regex",
    "makemv",
    "mvexpand",
    "convert",
    "addtotals",
    "reverse",
    "uniq",
];
const ALLOWED_LIST: &str = "search, where, eval, stats, eventstats, streamstats, timechart, \
    chart, top, rare, table, fields, rename, sort, head, tail, dedup, bin, bucket, fillnull, \
    spath, rex, regex, makemv, mvexpand, convert, addtotals, reverse, uniq";
const GENERATING: &[&str] = &["tstats", "mstats"];
const TIME_MODIFIERS: &[&str] = &[
    "earliest",
    "latest",
    "_index_earliest",
    "_index_latest",
    "starttime",
    "endtime",
    "starttimeu",
    "endtimeu",
    "starthoursago",
    "endhoursago",
    "startminutesago",
    "endminutesago",
    "startdaysago",
    "enddaysago",
];

/// A lexical token outside or inside quotes.
#[derive(Debug, PartialEq)]
enum Token {
    Word(String),
    Quoted(String),
    Op(char),
}

/// Splits SPL into tokens, honouring quotes and escapes; subsearches and macros are refused
/// here, where quoting is known.
fn tokens(spl: &str) -> Result<Vec<Token>, SplRefusal> {
    let mut out = Vec::new();
    let mut chars = spl.chars().peekable();
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut Vec<Token>| {
        if !word.is_empty() {
            out.push(Token::Word(std::mem::take(word)));
        }
    };
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                flush(&mut word, &mut out);
                let mut quoted = String::new();
                loop {
                    match chars.next() {
                        None => return Err(SplRefusal::UnbalancedQuotes),
                        Some('"') => break,
                        Some('\\') => quoted.extend(chars.next()),
                        Some(c) => quoted.push(c),
                    }
                }
                out.push(Token::Quoted(quoted));
            }
            '[' | ']' => return Err(SplRefusal::Subsearch),
            '`' => return Err(SplRefusal::Macro),
            '|' | '=' | '(' | ')' | ',' | '!' | '<' | '>' => {
                flush(&mut word, &mut out);
                out.push(Token::Op(c));
            }
            c if c.is_whitespace() => flush(&mut word, &mut out),
            c => word.push(c),
        }
    }
    flush(&mut word, &mut out);
    Ok(out)
}

/// A search the guard let through, with the time range the investigator forces.
pub fn check(
    config: &SplGuardConfig,
    spl: &str,
    earliest: Option<&str>,
) -> Result<Search, SplRefusal> {
    let earliest = earliest.unwrap_or(&config.default_earliest).trim();
    match relative_lookback(earliest) {
        None => return Err(SplRefusal::BadEarliest(earliest.to_owned())),
        Some(back) if back > config.max_lookback => {
            return Err(SplRefusal::Lookback {
                earliest: earliest.to_owned(),
                max: humantime::format_duration(config.max_lookback).to_string(),
            });
        }
        Some(_) => {}
    }
    let tokens = tokens(spl)?;
    if tokens.is_empty() {
        return Err(SplRefusal::Empty);
    }
    let stages: Vec<&[Token]> = tokens.split(|t| *t == Token::Op('|')).collect();
    let generating = stages[0].is_empty();
    for (at, stage) in stages.iter().enumerate() {
        let command = match stage.first() {
            Some(Token::Word(w)) => w.to_ascii_lowercase(),
            // The first stage is a search (or empty, before a generating command).
            _ if at == 0 => continue,
            _ => return Err(SplRefusal::Empty),
        };
        if FORBIDDEN.contains(&command.as_str()) {
            return Err(SplRefusal::Forbidden(command));
        }
        let allowed = match at {
            0 => true,
            1 if generating => GENERATING.contains(&command.as_str()),
            _ => ALLOWED.contains(&command.as_str()),
        };
        if !allowed {
            return Err(SplRefusal::NotAllowed(command));
        }
    }
    check_terms(config, &tokens)?;
    let spl = spl.trim();
    let starts_with_search = spl
        .split_whitespace()
        .next()
        .is_some_and(|w| w.eq_ignore_ascii_case("search"));
    Ok(Search {
        spl: if generating || starts_with_search {
            spl.to_owned()
        } else {
            format!("search {spl}")
        },
        earliest: earliest.to_owned(),
    })
}

/// Index terms name allowed indexes only (and at least one); time modifiers are refused.
fn check_terms(config: &SplGuardConfig, tokens: &[Token]) -> Result<(), SplRefusal> {
    let allowed = config.indexes.join(", ");
    let mut named = false;
    for (at, token) in tokens.iter().enumerate() {
        let Token::Word(word) = token else { continue };
        let word = word.to_ascii_lowercase();
        let next = tokens.get(at + 1);
        if TIME_MODIFIERS.contains(&word.as_str()) && next == Some(&Token::Op('=')) {
            return Err(SplRefusal::TimeModifier(word));
        }
        if word != "index" {
            continue;
        }
        let values: Vec<&str> = match (next, tokens.get(at + 2)) {
            (Some(Token::Op('=')), Some(Token::Word(v) | Token::Quoted(v))) => vec![v.as_str()],
            (Some(Token::Word(op)), Some(Token::Op('('))) if op.eq_ignore_ascii_case("in") => {
                tokens[at + 3..]
                    .iter()
                    .take_while(|t| **t != Token::Op(')'))
                    .filter_map(|t| match t {
                        Token::Word(v) | Token::Quoted(v) => Some(v.as_str()),
                        _ => None,
                    })
                    .collect()
            }
            (Some(Token::Op('!')), _) => {
                return Err(SplRefusal::IndexNotAllowed {
                    index: "!=".into(),
                    allowed,
                });
            }
            // `index` as a plain word (a field value, `by index`): not an index term.
            _ => continue,
        };
        for value in values {
            if !config.indexes.iter().any(|i| i == value) {
                return Err(SplRefusal::IndexNotAllowed {
                    index: value.to_owned(),
                    allowed,
                });
            }
            named = true;
        }
    }
    if named {
        Ok(())
    } else {
        Err(SplRefusal::NoIndex(allowed))
    }
}

/// How far back a relative Splunk time (`-90m`, `-1h@h`, `-2d`) reaches; `None` for anything
/// else (absolute times, `0`, `rt`).
pub fn relative_lookback(earliest: &str) -> Option<Duration> {
    let spec = earliest.strip_prefix('-')?;
    let (offset, snap) = match spec.split_once('@') {
        Some((offset, snap)) => (offset, Some(snap)),
        None => (spec, None),
    };
    let digits = offset.chars().take_while(char::is_ascii_digit).count();
    let count: u64 = if digits == 0 {
        1
    } else {
        offset[..digits].parse().ok()?
    };
    let unit = unit_seconds(&offset[digits..])?;
    // Snapping to a unit can reach back up to one more of it.
    let snap = match snap {
        None => 0,
        Some(s) => unit_seconds(s)?,
    };
    Some(Duration::from_secs(
        count.checked_mul(unit)?.checked_add(snap)?,
    ))
}

fn unit_seconds(unit: &str) -> Option<u64> {
    Some(match unit {
        "s" | "sec" | "secs" | "second" | "seconds" => 1,
        "m" | "min" | "mins" | "minute" | "minutes" => 60,
        "h" | "hr" | "hrs" | "hour" | "hours" => 3600,
        "d" | "day" | "days" => 86_400,
        "w" | "week" | "weeks" => 7 * 86_400,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> SplGuardConfig {
        SplGuardConfig {
            indexes: vec!["opsmesh".into(), "k8s".into()],
            ..SplGuardConfig::default()
        }
    }

    fn refused(spl: &str) -> SplRefusal {
        check(&guard(), spl, None).expect_err(spl)
    }

    #[test]
    fn reporting_searches_pass_with_the_forced_time_range() {
        let search = check(
            &guard(),
            "index=opsmesh sourcetype=\"opsmesh:models\" | stats max(restarts) by name | sort -restarts",
            Some("-4h"),
        )
        .unwrap();
        assert_eq!(
            search.spl,
            "search index=opsmesh sourcetype=\"opsmesh:models\" | stats max(restarts) by name | sort -restarts"
        );
        assert_eq!(search.earliest, "-4h");
        let tstats = check(&guard(), "| tstats count where index=k8s by host", None).unwrap();
        assert_eq!(tstats.spl, "| tstats count where index=k8s by host");
        assert_eq!(tstats.earliest, "-1h");
        check(
            &guard(),
            "search index IN (opsmesh, k8s) \"delete | me\"",
            None,
        )
        .unwrap();
    }

    #[test]
    fn side_effects_and_escapes_are_refused() {
        for command in [
            "delete",
            "collect",
            "outputlookup",
            "sendemail",
            "script",
            "map",
        ] {
            assert_eq!(
                refused(&format!("index=opsmesh | {command} x")),
                SplRefusal::Forbidden(command.into())
            );
        }
        assert_eq!(
            refused("| rest /services/apps/local"),
            SplRefusal::Forbidden("rest".into())
        );
        assert_eq!(
            refused("index=opsmesh | iplocation ip"),
            SplRefusal::NotAllowed("iplocation".into())
        );
        assert_eq!(
            refused("| inputlookup users.csv"),
            SplRefusal::NotAllowed("inputlookup".into())
        );
        assert_eq!(
            refused("index=opsmesh [search index=_audit]"),
            SplRefusal::Subsearch
        );
        assert_eq!(refused("index=opsmesh `evil_macro`"), SplRefusal::Macro);
        assert_eq!(
            refused("index=opsmesh \"unclosed"),
            SplRefusal::UnbalancedQuotes
        );
        assert_eq!(refused(""), SplRefusal::Empty);
        assert_eq!(refused("index=opsmesh | "), SplRefusal::Empty);
    }

    #[test]
    fn indexes_come_from_the_allow_list() {
        assert!(matches!(
            refused("sourcetype=x | stats count"),
            SplRefusal::NoIndex(_)
        ));
        assert!(matches!(
            refused("index=_audit | stats count"),
            SplRefusal::IndexNotAllowed { index, .. } if index == "_audit"
        ));
        assert!(matches!(
            refused("index=* | stats count"),
            SplRefusal::IndexNotAllowed { index, .. } if index == "*"
        ));
        assert!(matches!(
            refused("index IN (opsmesh, main)"),
            SplRefusal::IndexNotAllowed { index, .. } if index == "main"
        ));
        assert!(matches!(
            refused("index!=opsmesh"),
            SplRefusal::IndexNotAllowed { .. }
        ));
        // Quoted text is data, not an index term.
        assert!(matches!(
            refused("\"index=opsmesh\""),
            SplRefusal::NoIndex(_)
        ));
    }

    #[test]
    fn the_time_range_is_the_investigators() {
        assert_eq!(
            refused("index=opsmesh earliest=-30d"),
            SplRefusal::TimeModifier("earliest".into())
        );
        assert_eq!(
            refused("index=opsmesh latest = now"),
            SplRefusal::TimeModifier("latest".into())
        );
        // Functions of the same name are fine.
        check(
            &guard(),
            "index=opsmesh | stats earliest(_time) latest(x)",
            None,
        )
        .unwrap();
        assert!(matches!(
            check(&guard(), "index=opsmesh", Some("-2d")),
            Err(SplRefusal::Lookback { .. })
        ));
        assert!(matches!(
            check(&guard(), "index=opsmesh", Some("0")),
            Err(SplRefusal::BadEarliest(_))
        ));
        assert!(matches!(
            check(&guard(), "index=opsmesh", Some("2026-01-01T00:00:00")),
            Err(SplRefusal::BadEarliest(_))
        ));
        check(&guard(), "index=opsmesh", Some("-23h@h")).unwrap();
        assert!(check(&guard(), "index=opsmesh", Some("-24h@h")).is_err());
    }
}

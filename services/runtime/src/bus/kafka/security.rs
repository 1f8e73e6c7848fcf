//! How opsmesh authenticates to Kafka (`bus.kafka.security`): typed settings for TLS
//! (server verification, mTLS) and SASL (PLAIN, SCRAM), checked at start with errors that
//! name the key, and mapped onto librdkafka's properties. Secrets (the SASL password, the
//! private key's password) come from a file or an environment variable through
//! [`crate::secret`], are read when the client is built (librdkafka keeps what it was given:
//! a rotated password takes a restart) and never appear in `Debug` output or logs.

use std::{
    fmt,
    path::{Path, PathBuf},
};

use serde::Deserialize;

use crate::{
    config::ConfigError,
    secret::{InlineSecret, Secret, SecretSource},
};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SecurityProtocol {
    /// No encryption, no authentication: a local broker or a private test network only.
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    fn librdkafka(self) -> &'static str {
        match self {
            Self::Plaintext => "plaintext",
            Self::Ssl => "ssl",
            Self::SaslPlaintext => "sasl_plaintext",
            Self::SaslSsl => "sasl_ssl",
        }
    }

    fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum SaslMechanism {
    /// The password crosses the wire as is: only inside TLS (`sasl_ssl`).
    #[serde(rename = "PLAIN")]
    Plain,
    #[serde(rename = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    fn librdkafka(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// `bus.kafka.security`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KafkaSecurity {
    pub protocol: SecurityProtocol,
    pub tls: TlsSettings,
    pub sasl: SaslSettings,
}

/// `bus.kafka.security.tls`: used with `protocol = "ssl"` or `"sasl_ssl"`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsSettings {
    /// PEM file of the CA(s) that signed the brokers' certificates; unset: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// PEM client certificate, for mutual TLS (with `key_file`).
    pub certificate_file: Option<PathBuf>,
    /// PEM private key of `certificate_file`.
    pub key_file: Option<PathBuf>,
    /// The key's password, if the key is encrypted: at most one of the three.
    pub key_password: Option<InlineSecret>,
    pub key_password_file: Option<PathBuf>,
    pub key_password_env: Option<String>,
    /// Check that a broker's certificate names the host connected to. Turning it off lets
    /// anyone with a certificate from the same CA pose as a broker.
    pub endpoint_identification: bool,
}

impl Default for TlsSettings {
    fn default() -> Self {
        Self {
            ca_file: None,
            certificate_file: None,
            key_file: None,
            key_password: None,
            key_password_file: None,
            key_password_env: None,
            endpoint_identification: true,
        }
    }
}

/// `bus.kafka.security.sasl`: used with `protocol = "sasl_plaintext"` or `"sasl_ssl"`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SaslSettings {
    pub mechanism: Option<SaslMechanism>,
    pub username: Option<String>,
    /// Exactly one of the three. Inline is for tests: it lands in files and listings.
    pub password: Option<InlineSecret>,
    /// A file holding the password (a mounted Kubernetes Secret); one trailing newline is
    /// ignored.
    pub password_file: Option<PathBuf>,
    /// An environment variable holding the password.
    pub password_env: Option<String>,
}

impl TlsSettings {
    /// `key_password`, `key_password_file` or `key_password_env`.
    fn key_password_source(&self) -> SecretSource {
        SecretSource::from_fields(
            self.key_password.as_ref(),
            self.key_password_file.as_deref(),
            self.key_password_env.as_deref(),
        )
    }
}

impl SaslSettings {
    /// `password`, `password_file` or `password_env`.
    fn password_source(&self) -> SecretSource {
        SecretSource::from_fields(
            self.password.as_ref(),
            self.password_file.as_deref(),
            self.password_env.as_deref(),
        )
    }
}

/// librdkafka properties the typed settings own: setting them in `bus.kafka.client` as well
/// is an error, so a secret never sits in the untyped table and one place decides.
pub const OWNED_PROPERTIES: &[(&str, &str)] = &[
    ("security.protocol", "protocol"),
    ("ssl.ca.location", "tls.ca_file"),
    ("ssl.certificate.location", "tls.certificate_file"),
    ("ssl.key.location", "tls.key_file"),
    ("ssl.key.password", "tls.key_password_file"),
    (
        "ssl.endpoint.identification.algorithm",
        "tls.endpoint_identification",
    ),
    ("sasl.mechanism", "sasl.mechanism"),
    ("sasl.mechanisms", "sasl.mechanism"),
    ("sasl.username", "sasl.username"),
    ("sasl.password", "sasl.password_file"),
];

/// One librdkafka property; secret values are redacted in `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Property {
    pub name: &'static str,
    pub value: String,
    pub secret: bool,
}

impl fmt::Debug for Property {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.secret {
            "<redacted>"
        } else {
            &self.value
        };
        write!(f, "{}={value}", self.name)
    }
}

impl KafkaSecurity {
    /// Checks the settings against each other and the files they name; `kafka_prefix` is the
    /// Kafka section's key path (`bus.kafka`). Secrets are not read here: see
    /// [`KafkaSecurity::properties`].
    pub fn validate(
        &self,
        kafka_prefix: &str,
        client: &crate::bus::ClientOverrides,
    ) -> Result<(), ConfigError> {
        let prefix = &format!("{kafka_prefix}.security");
        for (property, typed) in OWNED_PROPERTIES {
            if client.contains_key(*property) {
                return Err(ConfigError::invalid(
                    format!("{kafka_prefix}.client.\"{property}\""),
                    format!("set through {prefix}.{typed} instead"),
                ));
            }
        }
        let tls = &self.tls;
        let sasl = &self.sasl;
        let key = |field: &str| format!("{prefix}.{field}");
        if !self.protocol.uses_tls() {
            let set = [
                ("tls.ca_file", tls.ca_file.is_some()),
                ("tls.certificate_file", tls.certificate_file.is_some()),
                ("tls.key_file", tls.key_file.is_some()),
            ];
            if let Some((field, _)) = set.iter().find(|(_, set)| *set) {
                return Err(ConfigError::invalid(
                    key(field),
                    format!(
                        "TLS files need protocol \"ssl\" or \"sasl_ssl\" (not \"{}\")",
                        self.protocol.librdkafka()
                    ),
                ));
            }
        }
        for (field, path) in [
            ("tls.ca_file", &tls.ca_file),
            ("tls.certificate_file", &tls.certificate_file),
            ("tls.key_file", &tls.key_file),
            ("tls.key_password_file", &tls.key_password_file),
            ("sasl.password_file", &sasl.password_file),
        ] {
            if let Some(path) = path {
                require_file(&key(field), path)?;
            }
        }
        match (&tls.certificate_file, &tls.key_file) {
            (Some(_), None) => {
                return Err(ConfigError::invalid(
                    key("tls.key_file"),
                    "required with tls.certificate_file (mutual TLS needs the certificate's private key)",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::invalid(
                    key("tls.certificate_file"),
                    "required with tls.key_file (mutual TLS needs the key's certificate)",
                ));
            }
            _ => {}
        }
        let key_passwords = tls.key_password_source().given();
        if key_passwords > 1 {
            return Err(ConfigError::invalid(
                key("tls.key_password"),
                "set at most one of key_password, key_password_file and key_password_env",
            ));
        }
        if key_passwords == 1 && tls.key_file.is_none() {
            return Err(ConfigError::invalid(
                key("tls.key_password"),
                "a key password needs tls.key_file",
            ));
        }

        let sasl_set =
            sasl.mechanism.is_some() || sasl.username.is_some() || sasl.password_source().is_set();
        if !self.protocol.uses_sasl() {
            if sasl_set {
                return Err(ConfigError::invalid(
                    key("sasl"),
                    format!(
                        "SASL settings need protocol \"sasl_plaintext\" or \"sasl_ssl\" (not \"{}\")",
                        self.protocol.librdkafka()
                    ),
                ));
            }
            return Ok(());
        }
        let Some(mechanism) = sasl.mechanism else {
            return Err(ConfigError::invalid(
                key("sasl.mechanism"),
                format!(
                    "required with protocol \"{}\": PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512",
                    self.protocol.librdkafka()
                ),
            ));
        };
        if sasl.username.as_deref().is_none_or(|u| u.trim().is_empty()) {
            return Err(ConfigError::invalid(
                key("sasl.username"),
                format!("required with sasl.mechanism {}", mechanism.librdkafka()),
            ));
        }
        match sasl.password_source().given() {
            0 => Err(ConfigError::invalid(
                key("sasl.password_file"),
                "required with sasl.mechanism: set one of password_file, password_env (or, for tests, password)",
            )),
            1 => Ok(()),
            _ => Err(ConfigError::invalid(
                key("sasl.password"),
                "set only one of password, password_file and password_env",
            )),
        }
    }

    /// The librdkafka properties of these settings, secrets read from their files and
    /// variables now. Call after [`KafkaSecurity::validate`].
    pub fn properties(&self, kafka_prefix: &str) -> Result<Vec<Property>, ConfigError> {
        let prefix = &format!("{kafka_prefix}.security");
        let plain = |name: &'static str, value: &str| Property {
            name,
            value: value.to_owned(),
            secret: false,
        };
        let path = |name: &'static str, path: &Path| plain(name, &path.to_string_lossy());
        let mut properties = vec![plain("security.protocol", self.protocol.librdkafka())];
        if self.protocol.uses_tls() {
            let tls = &self.tls;
            properties.extend(tls.ca_file.as_deref().map(|p| path("ssl.ca.location", p)));
            properties.extend(
                tls.certificate_file
                    .as_deref()
                    .map(|p| path("ssl.certificate.location", p)),
            );
            properties.extend(tls.key_file.as_deref().map(|p| path("ssl.key.location", p)));
            if let Some(value) = Secret::load(
                &format!("{prefix}.tls.key_password"),
                &tls.key_password_source(),
                password,
            )? {
                properties.push(Property {
                    name: "ssl.key.password",
                    value: value.get().to_string(),
                    secret: true,
                });
            }
            properties.push(plain(
                "ssl.endpoint.identification.algorithm",
                if tls.endpoint_identification {
                    "https"
                } else {
                    "none"
                },
            ));
        }
        if self.protocol.uses_sasl() {
            let sasl = &self.sasl;
            if let Some(mechanism) = sasl.mechanism {
                properties.push(plain("sasl.mechanism", mechanism.librdkafka()));
            }
            if let Some(username) = &sasl.username {
                properties.push(plain("sasl.username", username));
            }
            if let Some(value) = Secret::load(
                &format!("{prefix}.sasl.password"),
                &sasl.password_source(),
                password,
            )? {
                properties.push(Property {
                    name: "sasl.password",
                    value: value.get().to_string(),
                    secret: true,
                });
            }
        }
        Ok(properties)
    }
}

fn require_file(key: &str, path: &Path) -> Result<(), ConfigError> {
    match std::fs::metadata(path) {
        Ok(meta) if meta.is_file() => Ok(()),
        Ok(_) => Err(ConfigError::invalid(
            key,
            format!("{} is not a file", path.display()),
        )),
        Err(err) => Err(ConfigError::invalid(
            key,
            format!("cannot read {}: {err}", path.display()),
        )),
    }
}

/// A password as a secret store writes it: one trailing newline (as `echo` and most stores
/// write) is not part of it, other whitespace is.
fn password(text: &str) -> Result<String, String> {
    let value = text
        .strip_suffix('\n')
        .map(|v| v.strip_suffix('\r').unwrap_or(v))
        .unwrap_or(text);
    if value.is_empty() {
        return Err("is empty".into());
    }
    Ok(value.to_owned())
}

#[cfg(test)]
mod tests;

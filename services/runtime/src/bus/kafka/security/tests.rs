use super::*;
use crate::bus::{ClientOverrides, KafkaSettings};
use crate::config::{ConfigTree, Validate};

/// A temp dir with the PEM files and a password file the settings can point at.
struct Files {
    dir: tempfile::TempDir,
}

impl Files {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for name in ["ca.pem", "client.pem", "client.key"] {
            std::fs::write(dir.path().join(name), "-----BEGIN-----\n").unwrap();
        }
        std::fs::write(dir.path().join("password"), "s3cret-from-file\n").unwrap();
        Self { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn settings(security: KafkaSecurity) -> KafkaSettings {
    KafkaSettings {
        brokers: "broker:9093".into(),
        security,
        ..KafkaSettings::default()
    }
}

fn error_of(security: KafkaSecurity) -> String {
    settings(security)
        .validate("bus.kafka")
        .expect_err("invalid settings")
        .to_string()
}

fn properties(security: &KafkaSecurity) -> Vec<(&'static str, String)> {
    security
        .validate("bus.kafka", &ClientOverrides::new())
        .unwrap();
    security
        .properties("bus.kafka")
        .unwrap()
        .into_iter()
        .map(|p| (p.name, p.value))
        .collect()
}

fn scram(files: &Files) -> KafkaSecurity {
    KafkaSecurity {
        protocol: SecurityProtocol::SaslSsl,
        tls: TlsSettings {
            ca_file: Some(files.path("ca.pem")),
            ..TlsSettings::default()
        },
        sasl: SaslSettings {
            mechanism: Some(SaslMechanism::ScramSha512),
            username: Some("opsmesh-remediator".into()),
            password_file: Some(files.path("password")),
            ..SaslSettings::default()
        },
    }
}

#[test]
fn plaintext_is_the_default_and_sets_only_the_protocol() {
    assert_eq!(
        properties(&KafkaSecurity::default()),
        [("security.protocol", "plaintext".to_owned())]
    );
}

#[test]
fn sasl_ssl_with_scram_maps_every_property_and_reads_the_password_file() {
    let files = Files::new();
    let ca = files.path("ca.pem").to_string_lossy().into_owned();
    assert_eq!(
        properties(&scram(&files)),
        [
            ("security.protocol", "sasl_ssl".to_owned()),
            ("ssl.ca.location", ca),
            ("ssl.endpoint.identification.algorithm", "https".to_owned()),
            ("sasl.mechanism", "SCRAM-SHA-512".to_owned()),
            ("sasl.username", "opsmesh-remediator".to_owned()),
            // The file's trailing newline is not part of the password.
            ("sasl.password", "s3cret-from-file".to_owned()),
        ]
    );
}

#[test]
fn mutual_tls_maps_certificate_key_and_key_password() {
    let files = Files::new();
    let security = KafkaSecurity {
        protocol: SecurityProtocol::Ssl,
        tls: TlsSettings {
            ca_file: Some(files.path("ca.pem")),
            certificate_file: Some(files.path("client.pem")),
            key_file: Some(files.path("client.key")),
            key_password_file: Some(files.path("password")),
            endpoint_identification: false,
            ..TlsSettings::default()
        },
        sasl: SaslSettings::default(),
    };
    let path = |name: &str| files.path(name).to_string_lossy().into_owned();
    assert_eq!(
        properties(&security),
        [
            ("security.protocol", "ssl".to_owned()),
            ("ssl.ca.location", path("ca.pem")),
            ("ssl.certificate.location", path("client.pem")),
            ("ssl.key.location", path("client.key")),
            ("ssl.key.password", "s3cret-from-file".to_owned()),
            ("ssl.endpoint.identification.algorithm", "none".to_owned()),
        ]
    );
}

#[test]
fn sasl_plaintext_with_plain_takes_the_password_from_the_environment() {
    // A variable only this test sets: the process environment is shared by tests.
    let var = "OPSMESH_TEST_KAFKA_PASSWORD_SASL_PLAIN";
    // SAFETY: no other test reads or writes this variable.
    unsafe { std::env::set_var(var, "from-env") };
    let security = KafkaSecurity {
        protocol: SecurityProtocol::SaslPlaintext,
        tls: TlsSettings::default(),
        sasl: SaslSettings {
            mechanism: Some(SaslMechanism::Plain),
            username: Some("svc".into()),
            password_env: Some(var.into()),
            ..SaslSettings::default()
        },
    };
    assert_eq!(
        properties(&security),
        [
            ("security.protocol", "sasl_plaintext".to_owned()),
            ("sasl.mechanism", "PLAIN".to_owned()),
            ("sasl.username", "svc".to_owned()),
            ("sasl.password", "from-env".to_owned()),
        ]
    );
}

#[test]
fn the_typed_keys_load_from_the_environment_layer() {
    let files = Files::new();
    let password = files.path("password").to_string_lossy().into_owned();
    let env = [
        ("OPSMESH__BUS__KAFKA__BROKERS", "broker:9093"),
        ("OPSMESH__BUS__KAFKA__SECURITY__PROTOCOL", "sasl_plaintext"),
        (
            "OPSMESH__BUS__KAFKA__SECURITY__SASL__MECHANISM",
            "SCRAM-SHA-256",
        ),
        ("OPSMESH__BUS__KAFKA__SECURITY__SASL__USERNAME", "opsmesh"),
        (
            "OPSMESH__BUS__KAFKA__SECURITY__SASL__PASSWORD_FILE",
            &password,
        ),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let settings = ConfigTree::load_with_env(None, env)
        .unwrap()
        .settings()
        .unwrap();
    let security = &settings.bus.kafka.security;
    assert_eq!(security.protocol, SecurityProtocol::SaslPlaintext);
    assert_eq!(security.sasl.mechanism, Some(SaslMechanism::ScramSha256));
    assert!(security.tls.endpoint_identification, "on by default");
}

#[test]
fn an_unknown_protocol_or_mechanism_is_named() {
    let env = [
        ("OPSMESH__BUS__KAFKA__BROKERS", "broker:9093"),
        ("OPSMESH__BUS__KAFKA__SECURITY__SASL__MECHANISM", "GSSAPI"),
    ]
    .map(|(k, v)| (k.to_owned(), v.to_owned()));
    let err = ConfigTree::load_with_env(None, env)
        .unwrap()
        .settings()
        .unwrap_err()
        .to_string();
    assert!(err.contains("`bus.kafka.security.sasl.mechanism`"), "{err}");
    assert!(err.contains("GSSAPI"), "{err}");
}

#[test]
fn a_mechanism_without_a_username_is_named() {
    let files = Files::new();
    let mut security = scram(&files);
    security.sasl.username = None;
    let err = error_of(security);
    assert!(
        err.contains(
            "`bus.kafka.security.sasl.username`: required with sasl.mechanism SCRAM-SHA-512"
        ),
        "{err}"
    );
}

#[test]
fn a_sasl_protocol_without_a_mechanism_is_named() {
    let files = Files::new();
    let mut security = scram(&files);
    security.sasl.mechanism = None;
    let err = error_of(security);
    assert!(
        err.contains("`bus.kafka.security.sasl.mechanism`: required"),
        "{err}"
    );
}

#[test]
fn a_sasl_protocol_without_a_password_is_named() {
    let files = Files::new();
    let mut security = scram(&files);
    security.sasl.password_file = None;
    let err = error_of(security);
    assert!(
        err.contains("`bus.kafka.security.sasl.password_file`: required"),
        "{err}"
    );
}

#[test]
fn a_password_inline_and_as_a_file_is_an_error() {
    let files = Files::new();
    let mut security = scram(&files);
    security.sasl.password = Some(InlineSecret::new("inline"));
    let err = error_of(security);
    assert!(
        err.contains("`bus.kafka.security.sasl.password`: set only one of"),
        "{err}"
    );
}

#[test]
fn sasl_settings_without_a_sasl_protocol_are_an_error() {
    let files = Files::new();
    let mut security = scram(&files);
    security.protocol = SecurityProtocol::Ssl;
    let err = error_of(security);
    assert!(
        err.contains("`bus.kafka.security.sasl`: SASL settings need"),
        "{err}"
    );
}

#[test]
fn tls_files_without_a_tls_protocol_are_an_error() {
    let files = Files::new();
    let mut security = scram(&files);
    security.protocol = SecurityProtocol::SaslPlaintext;
    let err = error_of(security);
    assert!(
        err.contains("`bus.kafka.security.tls.ca_file`: TLS files need protocol"),
        "{err}"
    );
}

#[test]
fn a_missing_file_is_named_with_its_path() {
    let files = Files::new();
    let mut security = scram(&files);
    security.tls.ca_file = Some(files.path("no-such-ca.pem"));
    let err = error_of(security);
    assert!(
        err.contains("`bus.kafka.security.tls.ca_file`: cannot read"),
        "{err}"
    );
    assert!(err.contains("no-such-ca.pem"), "{err}");

    let mut security = scram(&files);
    security.sasl.password_file = Some(files.dir.path().to_owned());
    let err = error_of(security);
    assert!(
        err.contains("`bus.kafka.security.sasl.password_file`:") && err.contains("is not a file"),
        "{err}"
    );
}

#[test]
fn a_key_without_a_certificate_and_the_reverse_are_errors() {
    let files = Files::new();
    let mut security = scram(&files);
    security.tls.key_file = Some(files.path("client.key"));
    let err = error_of(security);
    assert!(
        err.contains("`bus.kafka.security.tls.certificate_file`: required with tls.key_file"),
        "{err}"
    );

    let mut security = scram(&files);
    security.tls.certificate_file = Some(files.path("client.pem"));
    let err = error_of(security);
    assert!(
        err.contains("`bus.kafka.security.tls.key_file`: required with tls.certificate_file"),
        "{err}"
    );
}

#[test]
fn key_password_errors_are_named() {
    let files = Files::new();
    let mut security = scram(&files);
    security.tls.key_password = Some(InlineSecret::new("k"));
    let err = error_of(security.clone());
    assert!(
        err.contains("`bus.kafka.security.tls.key_password`: a key password needs tls.key_file"),
        "{err}"
    );

    security.tls.certificate_file = Some(files.path("client.pem"));
    security.tls.key_file = Some(files.path("client.key"));
    security.tls.key_password_env = Some("SOME_VAR".into());
    let err = error_of(security);
    assert!(
        err.contains("`bus.kafka.security.tls.key_password`: set at most one"),
        "{err}"
    );
}

#[test]
fn secrets_in_the_untyped_client_table_are_refused() {
    let mut settings = settings(KafkaSecurity::default());
    settings
        .client
        .insert("sasl.password".into(), "hunter2".into());
    let err = settings.validate("bus.kafka").unwrap_err().to_string();
    assert!(
        err.contains("`bus.kafka.client.\"sasl.password\"`: set through bus.kafka.security.sasl.password_file"),
        "{err}"
    );
}

#[test]
fn an_unreadable_secret_is_named_when_the_client_is_built() {
    let security = KafkaSecurity {
        protocol: SecurityProtocol::SaslPlaintext,
        tls: TlsSettings::default(),
        sasl: SaslSettings {
            mechanism: Some(SaslMechanism::ScramSha256),
            username: Some("svc".into()),
            password_env: Some("OPSMESH_TEST_SURELY_UNSET_KAFKA_PASSWORD".into()),
            ..SaslSettings::default()
        },
    };
    let err = crate::bus::KafkaBus::new(&settings(security), "test")
        .err()
        .expect("no client without its password")
        .to_string();
    assert!(
        err.contains("`bus.kafka.security.sasl.password_env`: environment variable OPSMESH_TEST_SURELY_UNSET_KAFKA_PASSWORD is not set"),
        "{err}"
    );
}

#[test]
fn debug_output_never_shows_a_secret() {
    let files = Files::new();
    let mut security = scram(&files);
    security.sasl.password_file = None;
    security.sasl.password = Some(InlineSecret::new("hunter2-inline"));
    let settings = settings(security.clone());
    let shown = format!("{settings:?}");
    assert!(!shown.contains("hunter2-inline"), "{shown}");
    assert!(shown.contains("<redacted>"), "{shown}");
    let properties = security.properties("bus.kafka").unwrap();
    let shown = format!("{properties:?}");
    assert!(!shown.contains("hunter2-inline"), "{shown}");
    assert!(shown.contains("sasl.password=<redacted>"), "{shown}");
}

//! Integration tests of the configuration loader (SPEC §2): the example file, collected
//! problems with their keys, unknown keys, `env:` / `file:` values and path resolution.

use std::path::Path;
use std::time::Duration;

use ferry::config::{Config, ConfigErrors, Delivery, ProviderKind, Secret, TlsMode};

/// The environment the example file needs.
fn example_env(name: &str) -> Option<String> {
    let value = match name {
        "FERRY_EMAIL_SECRET" => "email-secret",
        "FERRY_SMS_SECRET" => "sms-secret",
        "FERRY_RSS_SECRET" => "rss-secret",
        "TWILIO_TOKEN" => "twilio-token",
        "KANNEL_PASSWORD" => "kannel-password",
        "KANNEL_INBOUND_TOKEN" => "kannel-token",
        _ => return None,
    };
    Some(value.to_owned())
}

fn no_env(_: &str) -> Option<String> {
    None
}

/// Writes `text` as `ferry.toml` in a new folder and loads it.
fn load_text(text: &str) -> (tempfile::TempDir, Result<Config, ConfigErrors>) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("ferry.toml");
    std::fs::write(&path, text).expect("write config");
    let result = Config::load_with_env(&path, &no_env);
    (dir, result)
}

fn problems(text: &str) -> ConfigErrors {
    let (_dir, result) = load_text(text);
    match result {
        Ok(config) => panic!("expected problems, got {config:#?}"),
        Err(errors) => errors,
    }
}

fn message_of<'a>(errors: &'a ConfigErrors, key: &str) -> &'a str {
    errors
        .0
        .iter()
        .find(|p| p.key == key)
        .map(|p| p.message.as_str())
        .unwrap_or_else(|| panic!("no problem at {key}; got:\n{errors}"))
}

const MINIMAL_RSS: &str = "[rss]\ndomain = \"rss.example.org\"\nsecret = \"s\"\n";

#[test]
fn example_file_loads() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ferry.example.toml");
    let config = Config::load_with_env(&path, &example_env)
        .unwrap_or_else(|e| panic!("the example config has problems:\n{e}"));

    let dir = path.parent().expect("folder");
    assert_eq!(config.base_dir, std::path::absolute(dir).expect("absolute"));

    assert_eq!(config.xmpp.host, "127.0.0.1");
    assert_eq!(config.xmpp.port, 5347);
    assert!(config.xmpp.is_allowed("someone@example.org"));
    assert!(!config.xmpp.is_allowed("someone@other.org"));
    assert!(config.xmpp.is_admin("Admin@Example.org"));

    assert!(!config.database.is_postgres());
    assert_eq!(
        config.database.url,
        format!("sqlite://{}/ferry.db", config.base_dir.display())
    );
    assert_eq!(config.secrets.key_file, config.base_dir.join("ferry.key"));

    let http = config.http.as_ref().expect("[http]");
    assert_eq!(http.listen.port(), 8080);
    assert_eq!(http.public_url.as_deref(), Some("https://gw.example.org"));

    let email = config.email.as_ref().expect("[email]");
    assert_eq!(email.component.domain, "email.example.org");
    assert_eq!(email.component.secret.expose(), "email-secret");
    assert_eq!(email.imap_tls, TlsMode::Implicit);
    assert_eq!(email.smtp_tls, TlsMode::StartTls);
    assert_eq!(email.max_message_bytes, 26_214_400);

    let sms = config.sms.as_ref().expect("[sms]");
    assert_eq!(sms.default_region, "US");
    assert_eq!(sms.quota_per_day, 200);
    assert_eq!(sms.providers.len(), 2);
    let twilio = sms.provider("main").expect("twilio provider");
    assert_eq!(twilio.kind, ProviderKind::Twilio);
    assert_eq!(
        twilio.auth_token.as_ref().map(Secret::expose),
        Some("twilio-token")
    );
    let kannel = sms.provider("modem").expect("kannel provider");
    assert_eq!(kannel.kind, ProviderKind::Kannel);
    assert_eq!(
        kannel.inbound_token.as_ref().map(Secret::expose),
        Some("kannel-token")
    );
    assert_eq!(sms.numbers.len(), 1);
    assert_eq!(sms.numbers[0].number, "+12015550100");
    assert_eq!(sms.numbers[0].owner.as_deref(), Some("alice@example.org"));

    let rss = config.rss.as_ref().expect("[rss]");
    assert_eq!(rss.default_interval, Duration::from_secs(3600));
    assert_eq!(rss.min_interval, Duration::from_secs(300));
    assert_eq!(rss.delivery, Delivery::Chat);
    assert!(!rss.allow_private_addresses);

    assert_eq!(config.log.level, "info");

    let bridges: Vec<(&str, &str)> = config
        .components()
        .into_iter()
        .map(|(bridge, c)| (bridge, c.domain.as_str()))
        .collect();
    assert_eq!(
        bridges,
        [
            ("email", "email.example.org"),
            ("sms", "sms.example.org"),
            ("rss", "rss.example.org")
        ]
    );

    // Secrets never show in Debug output.
    let debug = format!("{config:?}");
    for secret in [
        "email-secret",
        "twilio-token",
        "kannel-password",
        "kannel-token",
    ] {
        assert!(!debug.contains(secret), "{secret} leaked into Debug");
    }
}

#[test]
fn example_file_without_env_names_each_missing_variable() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/ferry.example.toml");
    let errors = Config::load_with_env(&path, &no_env).expect_err("env is missing");
    for key in [
        "email.secret",
        "sms.secret",
        "rss.secret",
        "sms.provider[0].auth_token",
        "sms.provider[1].password",
        "sms.provider[1].inbound_token",
    ] {
        assert!(
            message_of(&errors, key).contains("is not set"),
            "{key}: {errors}"
        );
    }
    assert_eq!(errors.0.len(), 6, "{errors}");
}

#[test]
fn defaults_apply() {
    let (dir, result) = load_text(MINIMAL_RSS);
    let config = result.expect("minimal config");
    let base = std::path::absolute(dir.path()).expect("absolute");
    assert_eq!(config.xmpp.host, "127.0.0.1");
    assert_eq!(config.xmpp.port, 5347);
    assert!(config.xmpp.allowed.is_empty());
    assert!(!config.xmpp.is_allowed("anyone@example.org"));
    assert_eq!(
        config.database.url,
        format!("sqlite://{}/ferry.db", base.display())
    );
    assert_eq!(config.secrets.key_file, base.join("ferry.key"));
    assert!(config.http.is_none());
    assert!(config.email.is_none());
    assert!(config.sms.is_none());
    assert_eq!(config.log.level, "info");
    let rss = config.rss.expect("rss");
    assert_eq!(rss.default_interval, Duration::from_secs(3600));
    assert_eq!(rss.min_interval, Duration::from_secs(300));
    assert_eq!(rss.initial_entries, 3);
    assert_eq!(rss.max_feed_bytes, 15_728_640);
}

#[test]
fn a_short_default_interval_lowers_the_unset_floor() {
    let text = format!("{MINIMAL_RSS}default_interval = \"2s\"\n");
    let (_dir, result) = load_text(&text);
    let rss = result.expect("only default_interval set").rss.expect("rss");
    assert_eq!(rss.default_interval, Duration::from_secs(2));
    assert_eq!(rss.min_interval, Duration::from_secs(2));
}

#[test]
fn http_listen_takes_a_host_name() {
    let text = format!("[http]\nlisten = \"localhost:8080\"\n{MINIMAL_RSS}");
    let (_dir, result) = load_text(&text);
    let http = result.expect("localhost:8080").http.expect("[http]");
    assert!(http.listen.ip().is_loopback(), "{}", http.listen);
    assert_eq!(http.listen.port(), 8080);
}

#[test]
fn many_problems_are_all_reported_with_their_keys() {
    let errors = problems(
        r#"
[xmpp]
port = "5347"
allowed = ["example.org", "*foo", "a@"]
admins = ["not-a-jid"]

[http]
listen = "localhost"
public_url = "gw.example.org"

[email]
domain = "email.example.org"
imap_host = "mail.example.org"
imap_tls = "none"
smtp_tls = "sometimes"
imap_port = 0

[sms]
domain = "email.example.org"
secret = "s"
default_region = "USA"

[[sms.provider]]
name = "Main"
kind = "twilio"
account_sid = "AC1"
api_secret = "x"

[[sms.provider]]
name = "k"
kind = "kannel"
sendsms_url = "http://127.0.0.1:13013/cgi-bin/sendsms"

[[sms.number]]
number = "2015550100"
provider = "nope"

[rss]
domain = "rss.example.org"
secret = "s"
min_interval = "2h"
default_interval = "90"
delivery = "loud"
"#,
    );
    let expected = [
        "xmpp.port",
        "xmpp.allowed[1]",
        "xmpp.allowed[2]",
        "xmpp.admins[0]",
        "http.listen",
        "http.public_url",
        "email.secret",
        "email.imap_tls",
        "email.smtp_tls",
        "email.imap_port",
        "sms.domain",
        "sms.default_region",
        "sms.provider[0].name",
        "sms.provider[0].auth_token",
        "sms.provider[0].api_secret",
        "sms.provider[1].username",
        "sms.provider[1].password",
        "sms.provider[1].inbound_token",
        "sms.number[0].number",
        "rss.default_interval",
        "rss.delivery",
    ];
    for key in expected {
        let _ = message_of(&errors, key);
    }
    assert_eq!(errors.0.len(), expected.len(), "{errors}");

    assert_eq!(message_of(&errors, "email.secret"), "missing required key");
    assert_eq!(
        message_of(&errors, "xmpp.port"),
        "expected an integer, found a string"
    );
    assert!(message_of(&errors, "xmpp.allowed[1]").contains("*foo"));
    assert!(message_of(&errors, "email.imap_tls").contains("loopback"));
    assert!(message_of(&errors, "sms.domain").contains("[email]"));
    assert_eq!(
        message_of(&errors, "sms.provider[0].api_secret"),
        "not a key of kind \"twilio\""
    );
    assert!(message_of(&errors, "rss.default_interval").contains("missing unit"));

    // Display: one `key: message` per line, lowercase, no trailing period.
    let text = errors.to_string();
    assert_eq!(text.lines().count(), expected.len());
    assert!(
        text.lines()
            .any(|l| l == "email.secret: missing required key")
    );
    for p in &errors.0 {
        assert!(!p.message.ends_with('.'), "{p}");
        assert!(!p.message.starts_with(|c: char| c.is_uppercase()), "{p}");
    }
}

#[test]
fn provider_name_mismatch_and_interval_order() {
    let errors = problems(
        r#"
[http]
listen = "127.0.0.1:8080"
[sms]
domain = "sms.example.org"
secret = "s"
[[sms.provider]]
name = "main"
kind = "telnyx"
api_key = "k"
public_key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
messaging_profile_id = "p"
[[sms.number]]
number = "+12015550100"
provider = "other"
[[sms.number]]
number = "+12015550100"
provider = "main"

[rss]
domain = "rss.example.org"
secret = "s"
min_interval = "2h"
"#,
    );
    assert!(message_of(&errors, "sms.number[0].provider").contains("\"other\""));
    assert!(message_of(&errors, "sms.number[1].number").contains("duplicate"));
    assert!(message_of(&errors, "rss.min_interval").contains("default_interval"));
    assert_eq!(errors.0.len(), 3, "{errors}");
}

#[test]
fn sms_needs_http_for_its_webhooks() {
    let errors = problems(
        r#"
[sms]
domain = "sms.example.org"
secret = "s"
[[sms.provider]]
name = "main"
kind = "twilio"
account_sid = "AC1"
auth_token = "t"
[[sms.number]]
number = "+12015550100"
provider = "main"
"#,
    );
    assert!(message_of(&errors, "http").contains("webhooks"), "{errors}");
    assert_eq!(errors.0.len(), 1, "{errors}");
}

#[test]
fn unknown_keys_are_named() {
    let errors = problems(
        r#"
colour = "blue"

[xmpp]
hots = "127.0.0.1"

[jabber]
x = 1

[rss]
domain = "rss.example.org"
secret = "s"
interval = "5m"

[rss.extra]
a = 1

[http]
listen = "127.0.0.1:8080"

[sms]
domain = "sms.example.org"
secret = "s"
[[sms.provider]]
name = "main"
kind = "twilio"
account_sid = "AC1"
auth_token = "t"
colour = "red"
[[sms.number]]
number = "+12015550100"
provider = "main"
"#,
    );
    for key in [
        "colour",
        "jabber",
        "xmpp.hots",
        "rss.interval",
        "rss.extra",
        "sms.provider[0].colour",
    ] {
        assert!(
            message_of(&errors, key).starts_with("unknown key"),
            "{key}: {errors}"
        );
    }
    assert_eq!(
        message_of(&errors, "xmpp.hots"),
        "unknown key (did you mean \"host\"?)"
    );
    assert_eq!(errors.0.len(), 6, "{errors}");
}

#[test]
fn wrong_table_shapes() {
    let errors = problems(
        r#"
xmpp = 5
[sms]
domain = "sms.example.org"
secret = "s"
[sms.provider]
name = "main"
"#,
    );
    assert!(message_of(&errors, "xmpp").starts_with("expected a table"));
    assert!(message_of(&errors, "sms.provider").contains("[[sms.provider]]"));
    assert!(message_of(&errors, "sms.number").contains("at least one"));
}

#[test]
fn no_bridge_is_a_problem() {
    let errors = problems("[xmpp]\nallowed = [\"*\"]\n");
    assert_eq!(
        message_of(&errors, "config"),
        "no bridge configured: add [email], [sms] or [rss]"
    );
    assert_eq!(errors.0.len(), 1);
}

#[test]
fn toml_syntax_error_is_one_problem() {
    let errors = problems("[rss\ndomain = 1\n");
    assert_eq!(errors.0.len(), 1);
    assert_eq!(errors.0[0].key, "config");
    assert!(
        errors.0[0].message.starts_with("invalid toml at line 1"),
        "{errors}"
    );
}

#[test]
fn missing_file_is_a_problem() {
    let errors =
        Config::load_with_env(Path::new("/nonexistent/ferry.toml"), &no_env).expect_err("no file");
    assert_eq!(errors.0[0].key, "config");
    assert!(
        errors.0[0]
            .message
            .starts_with("cannot read /nonexistent/ferry.toml")
    );
}

#[test]
fn relative_paths_follow_the_config_folder() {
    let dir = tempfile::tempdir().expect("tempdir");
    let sub = dir.path().join("etc");
    std::fs::create_dir(&sub).expect("mkdir");
    std::fs::write(sub.join("rss.secret"), "from-a-file\n").expect("write secret");
    let path = sub.join("ferry.toml");
    std::fs::write(
        &path,
        r#"
[database]
url = "sqlite:data/ferry.db?mode=rwc"
[secrets]
key_file = "keys/ferry.key"
[rss]
domain = "rss.example.org"
secret = "file:rss.secret"
"#,
    )
    .expect("write config");
    let config = Config::load_with_env(&path, &no_env).expect("valid");
    let base = std::path::absolute(&sub).expect("absolute");
    assert_eq!(
        config.database.url,
        format!("sqlite://{}/data/ferry.db?mode=rwc", base.display())
    );
    assert_eq!(config.secrets.key_file, base.join("keys/ferry.key"));
    let rss = config.rss.expect("rss");
    assert_eq!(rss.component.secret.expose(), "from-a-file");
}

#[test]
fn postgres_and_memory_urls_are_kept() {
    for url in [
        "postgres://ferry@db.example.org/ferry",
        "postgresql://ferry:pw@localhost:5432/ferry?sslmode=disable",
        "sqlite::memory:",
    ] {
        let text = format!("[database]\nurl = \"{url}\"\n{MINIMAL_RSS}");
        let config = Config::from_str_with_env(&text, Path::new("/srv"), &no_env).expect(url);
        assert_eq!(config.database.url, url);
        assert_eq!(config.database.is_postgres(), url.starts_with("postgres"));
    }
}

#[test]
fn env_values_feed_typed_keys() {
    let env = |name: &str| match name {
        "PORT" => Some("5348".to_owned()),
        "SECRET" => Some("x".to_owned()),
        "ALLOWED" => Some("example.net".to_owned()),
        _ => None,
    };
    let text = r#"
[xmpp]
port = "env:PORT"
allowed = ["env:ALLOWED", "env:NOPE"]
[rss]
domain = "rss.example.org"
secret = "env:SECRET"
"#;
    let errors = Config::from_str_with_env(text, Path::new("/srv"), &env).expect_err("NOPE");
    assert_eq!(
        errors.0,
        vec![ferry::config::Problem::new(
            "xmpp.allowed[1]",
            "environment variable NOPE is not set"
        )]
    );
    let config =
        Config::from_str_with_env(&text.replace(", \"env:NOPE\"", ""), Path::new("/srv"), &env)
            .expect("valid");
    assert_eq!(config.xmpp.port, 5348);
    assert!(config.xmpp.is_allowed("a@example.net"));
}

#[test]
fn allowed_patterns_and_admins() {
    let text = format!(
        "[xmpp]\nallowed = [\"Bob@Example.org\", \"example.net\", \"*.corp.example\"]\nadmins = [\"root@elsewhere.org\"]\n{MINIMAL_RSS}"
    );
    let config = Config::from_str_with_env(&text, Path::new("/srv"), &no_env).expect("valid");
    let x = &config.xmpp;
    assert!(x.is_allowed("bob@example.org"));
    assert!(x.is_allowed("BOB@EXAMPLE.ORG"));
    assert!(!x.is_allowed("alice@example.org"));
    assert!(x.is_allowed("anyone@example.net"));
    assert!(!x.is_allowed("anyone@sub.example.net"));
    assert!(x.is_allowed("a@corp.example"));
    assert!(x.is_allowed("a@eu.corp.example"));
    assert!(!x.is_allowed("a@notcorp.example"));
    assert!(
        x.is_allowed("root@elsewhere.org"),
        "admins are always allowed"
    );
    assert!(x.is_admin("Root@Elsewhere.org"));
    assert!(!x.is_admin("bob@example.org"));

    let text = format!("[xmpp]\nallowed = [\"*\"]\n{MINIMAL_RSS}");
    let config = Config::from_str_with_env(&text, Path::new("/srv"), &no_env).expect("valid");
    assert!(config.xmpp.is_allowed("whoever@wherever.net"));
}

#[test]
fn plaintext_mail_only_on_loopback() {
    let text = r#"
[email]
domain = "email.example.org"
secret = "s"
imap_host = "127.0.0.1"
imap_tls = "none"
smtp_host = "localhost"
smtp_tls = "none"
"#;
    let config = Config::from_str_with_env(text, Path::new("/srv"), &no_env).expect("valid");
    let email = config.email.expect("email");
    assert_eq!(email.imap_tls, TlsMode::None);
    assert_eq!(email.smtp_tls, TlsMode::None);
    assert_eq!(email.mailbox, "INBOX");

    let errors = Config::from_str_with_env(
        &text.replace("imap_host = \"127.0.0.1\"\n", ""),
        Path::new("/srv"),
        &no_env,
    )
    .expect_err("imap without host");
    assert!(errors.has("email.imap_tls"));
    assert_eq!(errors.0.len(), 1, "{errors}");
}

#[test]
fn secret_is_redacted() {
    let s = Secret::new("hunter2");
    assert_eq!(format!("{s}"), "[redacted]");
    assert_eq!(format!("{s:?}"), "[redacted]");
    assert_eq!(s.expose(), "hunter2");
}

//! The SMTP side of a mailbox: connecting (implicit TLS, STARTTLS, or plaintext on
//! loopback), logging in whenever the server offers AUTH, and handing one mail over, with
//! the server's reply turned into an error that says whether a retry can help.

use ferry_bridge_api::{BridgeError, ErrorKind};
use lettre::address::Envelope;
use lettre::transport::smtp::authentication::{Credentials, Mechanism};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;

use crate::net::{self, Server, Tls};

/// An open, logged-in SMTP connection.
pub struct Smtp {
    conn: AsyncSmtpConnection,
}

fn tls_parameters(host: &str) -> Result<TlsParameters, BridgeError> {
    TlsParameters::builder(host.to_owned())
        .build_rustls()
        .map_err(|e| BridgeError::permanent(format!("SMTP TLS setup failed: {e}")))
}

/// The server's words from a lettre error: "550 5.1.1 <x@y>: Recipient address rejected".
fn server_words(e: &lettre::transport::smtp::Error) -> String {
    let detail = std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_default();
    match e.status() {
        Some(code) => format!("{code} {detail}").trim().to_owned(),
        None if detail.is_empty() => e.to_string(),
        None => format!("{e}"),
    }
}

/// What a failed SMTP exchange means for the message and the user.
pub fn classify(stage: &str, e: &lettre::transport::smtp::Error) -> BridgeError {
    let words = server_words(e);
    if e.is_transient() || e.is_timeout() || !e.is_permanent() && !e.is_response() {
        return BridgeError::transient(format!("SMTP {stage}: {words}"));
    }
    let code = e.status().map(|c| c.to_string()).unwrap_or_default();
    // The user reads the meaning first, then the server's own words.
    let (kind, meaning) = match code.as_str() {
        "530" | "534" | "535" | "538" => (ErrorKind::NotAuthorized, "not allowed to send"),
        "550" | "551" | "553" => (ErrorKind::RecipientUnavailable, "mailbox does not exist"),
        "552" => (ErrorKind::ResourceConstraint, "too large for the mailbox"),
        _ => (ErrorKind::Permanent, "refused"),
    };
    BridgeError::new(
        kind,
        format!("{meaning}: the mail server refused it: {words}"),
    )
}

impl Smtp {
    /// Connects to `server` and logs in as `user` when the server offers AUTH. A refused
    /// password is [`ErrorKind::NotAuthorized`] "SMTP login failed: 535 …".
    pub async fn connect(
        server: &Server,
        hello: &str,
        user: &str,
        password: &str,
    ) -> Result<Smtp, BridgeError> {
        server
            .check()
            .map_err(|e| BridgeError::new(ErrorKind::NotAcceptable, format!("SMTP server: {e}")))?;
        let hello = ClientId::Domain(hello.to_owned());
        let implicit = match server.tls {
            Tls::Implicit => Some(tls_parameters(&server.host)?),
            _ => None,
        };
        let mut conn = AsyncSmtpConnection::connect_tokio1(
            (server.host.as_str(), server.port),
            Some(net::CONNECT_TIMEOUT),
            &hello,
            implicit,
            None,
        )
        .await
        .map_err(|e| {
            BridgeError::transient(format!(
                "cannot reach SMTP server {server}: {}",
                server_words(&e)
            ))
        })?;
        if server.tls == Tls::StartTls {
            if !conn.can_starttls() {
                return Err(BridgeError::new(
                    ErrorKind::NotAcceptable,
                    format!("SMTP server {server} does not offer STARTTLS"),
                ));
            }
            conn.starttls(tls_parameters(&server.host)?, &hello)
                .await
                .map_err(|e| {
                    BridgeError::transient(format!(
                        "SMTP STARTTLS with {server} failed: {}",
                        server_words(&e)
                    ))
                })?;
        }
        let mechanisms = [Mechanism::Plain, Mechanism::Login];
        if conn.server_info().get_auth_mechanism(&mechanisms).is_some() {
            let creds = Credentials::new(user.to_owned(), password.to_owned());
            if let Err(e) = conn.auth(&mechanisms, &creds).await {
                let err = classify("login", &e);
                return Err(if err.kind == ErrorKind::Transient {
                    err
                } else {
                    BridgeError::new(
                        ErrorKind::NotAuthorized,
                        format!("SMTP login failed: {}", server_words(&e)),
                    )
                });
            }
        }
        Ok(Smtp { conn })
    }

    /// Whether the connection still answers (NOOP).
    pub async fn alive(&mut self) -> bool {
        !self.conn.has_broken() && self.conn.test_connected().await
    }

    /// Hands `raw` over for `to`, from `from` (the envelope sender).
    pub async fn send(&mut self, from: &str, to: &str, raw: &[u8]) -> Result<(), BridgeError> {
        let envelope = Envelope::new(
            Some(from.parse().map_err(|e| {
                BridgeError::permanent(format!("{from:?} cannot be an envelope sender: {e}"))
            })?),
            vec![to.parse().map_err(|e| {
                BridgeError::new(
                    ErrorKind::Malformed,
                    format!("{to:?} cannot be an envelope recipient: {e}"),
                )
            })?],
        )
        .map_err(|e| BridgeError::permanent(format!("no envelope: {e}")))?;
        self.conn
            .send(&envelope, raw)
            .await
            .map(|_| ())
            .map_err(|e| classify("send", &e))
    }

    pub async fn quit(mut self) {
        let _ = self.conn.quit().await;
    }
}

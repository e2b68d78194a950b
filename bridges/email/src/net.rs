//! Connections to mail servers: TCP with a deadline, TLS through rustls with the
//! platform's roots (implicit, or upgraded after STARTTLS), and the rule that plaintext is
//! only for loopback hosts.

use std::fmt;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use ferry_bridge_api::BridgeError;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_rustls::rustls::{self, ClientConfig, pki_types::ServerName};

/// How a mail server connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tls {
    /// TLS from the first byte (IMAPS 993, SMTPS 465).
    Implicit,
    /// Plaintext greeting, then STARTTLS before anything secret is said.
    StartTls,
    /// No TLS at all: only for loopback hosts.
    None,
}

impl Tls {
    pub fn parse(s: &str) -> Option<Tls> {
        match s.trim().to_ascii_lowercase().as_str() {
            "implicit" | "tls" | "ssl" => Some(Tls::Implicit),
            "starttls" => Some(Tls::StartTls),
            "none" | "plain" => Some(Tls::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Tls::Implicit => "implicit",
            Tls::StartTls => "starttls",
            Tls::None => "none",
        }
    }
}

/// Where a mail server is and how to reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Server {
    pub host: String,
    pub port: u16,
    pub tls: Tls,
}

impl fmt::Display for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

impl Server {
    /// Refuses plaintext to anything but a loopback host.
    pub fn check(&self) -> Result<(), String> {
        if self.host.is_empty() {
            return Err("no server host given".into());
        }
        if self.tls == Tls::None && !is_loopback(&self.host) {
            return Err(format!(
                "TLS mode \"none\" is only allowed for loopback hosts, not {}",
                self.host
            ));
        }
        Ok(())
    }
}

/// `localhost` or a loopback IP address.
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<IpAddr>()
            .map(|ip| ip.is_loopback())
            .unwrap_or(false)
}

/// How long connecting (TCP, TLS, greeting) may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);

/// The rustls client configuration: aws-lc-rs and the platform's trust roots.
pub fn tls_config() -> Result<Arc<ClientConfig>, BridgeError> {
    static CONFIG: OnceLock<Result<Arc<ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            use rustls_platform_verifier::BuilderVerifierExt;
            let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
            ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .and_then(|b| b.with_platform_verifier())
                .map(|b| Arc::new(b.with_no_client_auth()))
                .map_err(|e| format!("TLS setup failed: {e}"))
        })
        .clone()
        .map_err(BridgeError::permanent)
}

/// A TCP connection, plain or wrapped in TLS.
#[derive(Debug)]
pub enum MailStream {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Opens a TCP connection to `server` (TLS already when implicit).
pub async fn connect(server: &Server) -> Result<MailStream, BridgeError> {
    let unreachable =
        |e: &dyn fmt::Display| BridgeError::transient(format!("cannot reach {server}: {e}"));
    let tcp = tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect((server.host.as_str(), server.port)),
    )
    .await
    .map_err(|_| unreachable(&"timed out"))?
    .map_err(|e| unreachable(&e))?;
    let _ = tcp.set_nodelay(true);
    match server.tls {
        Tls::Implicit => wrap(tcp, &server.host)
            .await
            .map(|s| MailStream::Tls(Box::new(s))),
        Tls::StartTls | Tls::None => Ok(MailStream::Plain(tcp)),
    }
}

/// Wraps `tcp` in TLS for `host`, checking its certificate.
pub async fn wrap(tcp: TcpStream, host: &str) -> Result<TlsStream<TcpStream>, BridgeError> {
    let name = ServerName::try_from(
        host.trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned(),
    )
    .map_err(|e| BridgeError::permanent(format!("{host} is not a TLS server name: {e}")))?;
    let connector = TlsConnector::from(tls_config()?);
    tokio::time::timeout(CONNECT_TIMEOUT, connector.connect(name, tcp))
        .await
        .map_err(|_| BridgeError::transient(format!("TLS with {host} timed out")))?
        .map_err(|e| BridgeError::transient(format!("TLS with {host} failed: {e}")))
}

impl MailStream {
    /// Upgrades a plaintext stream after STARTTLS.
    pub async fn upgrade(self, host: &str) -> Result<MailStream, BridgeError> {
        match self {
            MailStream::Plain(tcp) => Ok(MailStream::Tls(Box::new(wrap(tcp, host).await?))),
            tls @ MailStream::Tls(_) => Ok(tls),
        }
    }
}

impl AsyncRead for MailStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MailStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            MailStream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for MailStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match self.get_mut() {
            MailStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            MailStream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MailStream::Plain(s) => Pin::new(s).poll_flush(cx),
            MailStream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match self.get_mut() {
            MailStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            MailStream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_for_loopback() {
        let s = |host: &str, tls| Server {
            host: host.into(),
            port: 1,
            tls,
        };
        assert!(s("127.0.0.1", Tls::None).check().is_ok());
        assert!(s("localhost", Tls::None).check().is_ok());
        assert!(s("::1", Tls::None).check().is_ok());
        assert!(s("mail.example.org", Tls::None).check().is_err());
        assert!(s("10.0.0.1", Tls::None).check().is_err());
        assert!(s("mail.example.org", Tls::StartTls).check().is_ok());
    }

    #[test]
    fn tls_modes_read() {
        assert_eq!(Tls::parse("STARTTLS"), Some(Tls::StartTls));
        assert_eq!(Tls::parse("implicit"), Some(Tls::Implicit));
        assert_eq!(Tls::parse("none"), Some(Tls::None));
        assert_eq!(Tls::parse("maybe"), None);
    }
}

//! TLS towards mail servers is real and verified: against an `openssl s_server` with a
//! self-signed certificate (made here with the openssl CLI), both the IMAP login and the
//! SMTP connection with implicit TLS complete a handshake and refuse the certificate, with
//! an error that says so; and plaintext towards a non-loopback host is refused before any
//! connection is made.

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ferry_bridge_api::ErrorKind;
use ferry_email::net::{Server, Tls};

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// A TLS server on loopback with a fresh self-signed certificate for 127.0.0.1.
fn untrusted_tls_server(dir: &std::path::Path) -> (Killed, u16) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl req");
    assert!(made.success(), "openssl could not make a certificate");
    let port = free_port();
    let child = Command::new("openssl")
        .args(["s_server", "-quiet", "-accept"])
        .arg(format!("127.0.0.1:{port}"))
        .arg("-cert")
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start openssl s_server");
    let server = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "s_server did not listen");
        std::thread::yield_now();
    }
    (server, port)
}

#[tokio::test]
async fn an_untrusted_certificate_is_refused_on_imap_and_smtp() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_server, port) = untrusted_tls_server(dir.path());
    let server = Server {
        host: "127.0.0.1".into(),
        port,
        tls: Tls::Implicit,
    };
    let e = ferry_email::imap::login(&server, "u", "p")
        .await
        .expect_err("an untrusted certificate must be refused");
    assert!(
        e.text.contains("TLS") && e.text.to_lowercase().contains("certificate"),
        "{}",
        e.text
    );
    let e = match ferry_email::smtp::Smtp::connect(&server, "example.org", "u", "p").await {
        Ok(_) => panic!("an untrusted certificate must be refused"),
        Err(e) => e,
    };
    assert!(
        e.text.to_lowercase().contains("certificate") || e.text.contains("tls"),
        "{}",
        e.text
    );
}

#[tokio::test]
async fn plaintext_is_refused_off_loopback_before_connecting() {
    let server = Server {
        host: "mail.invalid".into(),
        port: 143,
        tls: Tls::None,
    };
    let e = ferry_email::imap::login(&server, "u", "p")
        .await
        .expect_err("refused");
    assert_eq!(e.kind, ErrorKind::NotAcceptable, "{}", e.text);
    assert!(e.text.contains("loopback"), "{}", e.text);
    let e = match ferry_email::smtp::Smtp::connect(&server, "example.org", "u", "p").await {
        Ok(_) => panic!("refused"),
        Err(e) => e,
    };
    assert_eq!(e.kind, ErrorKind::NotAcceptable, "{}", e.text);
}

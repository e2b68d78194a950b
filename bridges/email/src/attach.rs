//! Links in outgoing messages (XEP-0066, XEP-0363 uploads) fetched to go out as
//! attachments: http(s) only, no private or loopback addresses unless allowed (the address
//! checked is the one connected to), no redirects, and never more than the bytes left
//! under `max_message_bytes`. Anything that fails stays a link in the text.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures_util::StreamExt;

use crate::mime::Attachment;

/// Why a link was not attached.
#[derive(Debug, PartialEq, Eq)]
pub enum Skip {
    TooLarge,
    Refused(String),
    Failed(String),
}

fn public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_broadcast()
                || v4.is_unspecified()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || o[0] >= 224)
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return public(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            !(v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80)
        }
    }
}

/// The file name a link suggests (its last path segment), made safe.
pub fn name_of(url: &reqwest::Url) -> String {
    let raw = url
        .path_segments()
        .and_then(|mut s| s.next_back())
        .filter(|s| !s.is_empty())
        .unwrap_or("attachment");
    let decoded = percent_decode(raw);
    let clean: String = decoded
        .chars()
        .filter(|c| !c.is_control() && !matches!(c, '/' | '\\'))
        .take(100)
        .collect();
    if clean.trim().is_empty() || clean == "." || clean == ".." {
        "attachment".into()
    } else {
        clean
    }
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let (Some(h), Some(l)) = (
                (b[i + 1] as char).to_digit(16),
                (b[i + 2] as char).to_digit(16),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Fetches `link` as an attachment of at most `budget` bytes.
pub async fn fetch(link: &str, budget: usize, allow_private: bool) -> Result<Attachment, Skip> {
    let url = reqwest::Url::parse(link).map_err(|e| Skip::Refused(format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(Skip::Refused(format!(
            "{} links are not fetched",
            url.scheme()
        )));
    }
    let host = url
        .host_str()
        .ok_or_else(|| Skip::Refused("a link without a host".into()))?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = url.port_or_known_default().unwrap_or(80);
    let addrs: Vec<SocketAddr> = tokio::time::timeout(
        Duration::from_secs(10),
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    .map_err(|_| Skip::Failed(format!("{host}: name lookup timed out")))?
    .map_err(|e| Skip::Failed(format!("{host}: {e}")))?
    .collect();
    let addr = addrs
        .iter()
        .copied()
        .find(|a| allow_private || public(a.ip()))
        .ok_or_else(|| Skip::Refused(format!("{host} is a private address")))?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .resolve(&host, addr)
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Skip::Failed(e.to_string()))?;
    let resp = client
        .get(url.clone())
        .send()
        .await
        .map_err(|e| Skip::Failed(format!("{host}: {e}")))?;
    if !resp.status().is_success() {
        return Err(Skip::Failed(format!("{host} answered {}", resp.status())));
    }
    if resp.content_length().is_some_and(|n| n > budget as u64) {
        return Err(Skip::TooLarge);
    }
    let content_type = resp
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase())
        .filter(|v| v.contains('/') && v.chars().all(|c| c.is_ascii_graphic()))
        .unwrap_or_else(|| "application/octet-stream".into());
    let mut data = Vec::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Skip::Failed(format!("{host}: {e}")))?;
        if data.len() + chunk.len() > budget {
            return Err(Skip::TooLarge);
        }
        data.extend_from_slice(&chunk);
    }
    Ok(Attachment {
        name: name_of(&url),
        content_type,
        data,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_not_public() {
        for ip in [
            "127.0.0.1",
            "10.1.2.3",
            "192.168.0.1",
            "172.16.0.1",
            "169.254.169.254",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:127.0.0.1",
            "0.0.0.0",
            "100.64.0.1",
        ] {
            assert!(!public(ip.parse().expect("ip")), "{ip}");
        }
        for ip in ["93.184.216.34", "2606:2800:220:1::1"] {
            assert!(public(ip.parse().expect("ip")), "{ip}");
        }
    }

    #[test]
    fn names_come_from_the_path() {
        let u = |s: &str| reqwest::Url::parse(s).expect("url");
        assert_eq!(
            name_of(&u("https://x.org/up/abc/photo%20one.jpg")),
            "photo one.jpg"
        );
        assert_eq!(name_of(&u("https://x.org/")), "attachment");
        assert_eq!(name_of(&u("https://x.org/a/..%2F..%2Fetc")), "....etc");
    }

    #[tokio::test]
    async fn refuses_private_and_odd_links() {
        assert!(matches!(
            fetch("http://127.0.0.1:1/x", 10, false).await,
            Err(Skip::Refused(_))
        ));
        assert!(matches!(
            fetch("file:///etc/passwd", 10, true).await,
            Err(Skip::Refused(_))
        ));
        assert!(matches!(
            fetch("not a url", 10, true).await,
            Err(Skip::Refused(_))
        ));
    }
}

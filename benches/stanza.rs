//! Benchmark: parse + route + serialize per stanza, in process, on one core.
//!
//! Feeds a component stream of realistic message stanzas through the same
//! [`StreamReader`] the link uses, classifies each with [`Stanza::from_element`] and
//! [`router::route`], builds the XEP-0184 receipt ferry would send back, and serializes
//! it. Prints stanzas per second and microseconds per stanza. Run with
//! `cargo bench --bench stanza`.

use std::time::Instant;

use ferry::router::{self, Access, Route};
use ferry::stanza::Stanza;
use ferry::xml::{Element, Limits, NS_COMPONENT, StreamEvent, StreamReader};

struct Everyone;
impl Access for Everyone {
    fn is_allowed(&self, bare: &str) -> bool {
        bare.ends_with("@example.org")
    }
    fn is_admin(&self, _: &str) -> bool {
        false
    }
}

fn stream(n: usize) -> Vec<u8> {
    let mut s = String::from(
        "<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' id='bench' from='email.example.org'>",
    );
    for i in 0..n {
        s.push_str(&format!(
            "<message xmlns='jabber:component:accept' type='chat' id='msg-{i}' from='alice@example.org/Conversations.x3Fk' to='bob.smith\\40example.com@email.example.org' xml:lang='en'><body>Hello Bob, this is message number {i} &amp; it carries a little text, like a chat would.</body><request xmlns='urn:xmpp:receipts'/><active xmlns='http://jabber.org/protocol/chatstates'/><origin-id xmlns='urn:xmpp:sid:0' id='o-{i}'/></message>"
        ));
    }
    s.into_bytes()
}

fn main() {
    let n: usize = std::env::var("BENCH_STANZAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let input = stream(n);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let mut best = f64::MAX;
    for round in 0..3 {
        let started = Instant::now();
        let (count, bytes) = rt.block_on(async {
            let mut reader = StreamReader::new(&input[..], Limits::default());
            let mut count = 0usize;
            let mut out = String::with_capacity(1 << 20);
            let mut bytes = 0usize;
            loop {
                match reader.next().await {
                    Ok(StreamEvent::Stanza(el)) => {
                        let st = Stanza::from_element(el).expect("stanza");
                        let route = router::route(&st, "email.example.org", &Everyone);
                        assert!(matches!(route, Route::ContactMessage(_)));
                        let receipt = Element::new("message", NS_COMPONENT)
                            .with_attr("from", st.to.as_str())
                            .with_attr("to", st.from.as_str())
                            .with_child(
                                Element::new("received", "urn:xmpp:receipts")
                                    .with_opt_attr("id", st.id.as_deref()),
                            );
                        out.clear();
                        receipt.write_to(&mut out, NS_COMPONENT);
                        bytes += out.len();
                        count += 1;
                    }
                    Ok(StreamEvent::Open(_)) => {}
                    _ => break,
                }
            }
            (count, bytes)
        });
        let secs = started.elapsed().as_secs_f64();
        assert_eq!(count, n);
        let per = secs / n as f64 * 1e6;
        best = best.min(per);
        println!(
            "round {round}: {n} stanzas in {secs:.3}s = {:.0} stanzas/s, {per:.2} µs/stanza ({} bytes out)",
            n as f64 / secs,
            bytes
        );
    }
    println!(
        "best: {:.0} stanzas/s per core, {best:.2} µs/stanza (parse + route + serialize)",
        1e6 / best
    );
}

//! The outbox worker of one gateway: takes due rows from the durable outbox, hands each to
//! its user's session, and answers the user: a receipt on delivery, an error stanza on
//! permanent failure, a later retry (with backoff) on a transient one.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::FutureExt;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;

use ferry_bridge_api::{BridgeError, ErrorKind, Outbound, RemoteId, SendReceipt};

use crate::component::Receipt;
use crate::gateway::{Gateway, OutboxPayload};
use crate::stanza::{Condition, condition_for, error_element};
use crate::store::{OutboxRow, SentRow, now_ms};
use crate::xml::{Element, NS_COMPONENT};

/// A row the foreign side accepted, waiting to be settled in the store.
struct Delivered {
    sent: SentRow,
    answer: Answer,
}

/// What to tell the user about a delivered row once it is settled.
struct Answer {
    /// Whether to send the XEP-0184 receipt now (else a delivery report will come).
    receipt_now: bool,
    contact: String,
    row: OutboxRow,
    /// What the bridge wants the user told about the send.
    notice: Option<String>,
}

/// How one attempt at a row ended.
enum Attempt {
    /// The foreign side took it: settle it and tell the user.
    Delivered(Box<Delivered>),
    /// It failed transiently and is due again at this time.
    Retry(i64),
    /// It was settled as failed (the user has been told).
    Settled,
}

/// The XEP-0184 receipt for a delivered row, from the contact, if its sender asked for one.
fn receipt(row: OutboxRow, contact: String) -> Option<Receipt> {
    if !row.want_receipt {
        return None;
    }
    Some(Receipt {
        from: contact,
        to: row.from_jid,
        row: row.id,
        of: row.stanza_id?,
    })
}

/// The instant a unix time in milliseconds falls on (now if it has passed).
fn instant_at(at_ms: i64) -> Instant {
    let ahead = u64::try_from(at_ms.saturating_sub(now_ms())).unwrap_or(0);
    Instant::now() + Duration::from_millis(ahead.min(86_400_000))
}

/// How long a claimed row stays ours before another worker may take it.
pub const LEASE_MS: i64 = 120_000;
/// The most rows one pass sends.
const PASS_ROWS: usize = 256;
/// Give up on a message that keeps failing transiently after this many attempts.
const MAX_ATTEMPTS: i64 = 12;
/// Longest a single send may take before it counts as a transient failure.
const SEND_TIMEOUT: Duration = Duration::from_secs(90);

/// When to try again after `attempts` failures: 5 s doubling to an hour, jittered.
pub fn retry_delay_ms(attempts: i64) -> i64 {
    let base = 5_000i64
        .saturating_mul(1 << attempts.clamp(0, 10))
        .min(3_600_000);
    let jitter = 0.75 + rand::random::<f64>() * 0.5;
    (base as f64 * jitter) as i64
}

impl Gateway {
    /// Runs until shutdown: sends the rows the router hands over as they come, and looks
    /// in the store for due rows (retries, rows left by a stopped process or another
    /// instance) at start, when told to ([`Gateway::wake_outbox`]), and when the next
    /// stored row falls due.
    pub async fn run_outbox(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let mut depth_at = Instant::now() - Duration::from_secs(10);
        let mut depth_stale = true;
        // Due now: the first pass looks in the store (rows a stopped process left).
        let mut claim_at = Instant::now();
        loop {
            if *shutdown.borrow() {
                return;
            }
            let (ready, look) = {
                let mut handoff = self.lock_handoff();
                let n = handoff.rows.len().min(PASS_ROWS);
                let ready: Vec<_> = handoff
                    .rows
                    .drain(..n)
                    .map(|(row, payload)| (row, Some(payload)))
                    .collect();
                // Handed-over rows go first; the store is looked at once they are done.
                let look = ready.is_empty() && std::mem::take(&mut handoff.look_in_store);
                (ready, look)
            };
            let claim = ready.is_empty() && (look || Instant::now() >= claim_at);
            let rows = if claim {
                match self
                    .store
                    .claim_due(self.kind, now_ms(), LEASE_MS, PASS_ROWS as i64)
                    .await
                {
                    Ok(rows) => rows.into_iter().map(|row| (row, None)).collect(),
                    Err(e) => {
                        tracing::error!(domain = %self.domain, "outbox: {e}");
                        Vec::new()
                    }
                }
            } else {
                ready
            };
            let worked = !rows.is_empty();
            if worked {
                depth_stale = true;
                if let Some(at) = self.outbox_pass(rows).await {
                    claim_at = claim_at.min(instant_at(at));
                }
            }
            // The depth gauge costs a query: refresh it at most once a second.
            if depth_stale && depth_at.elapsed() >= Duration::from_secs(1) {
                let depth = self.store.outbox_depth(self.kind).await.unwrap_or(0);
                self.metrics.set_outbox_depth(self.kind.as_str(), depth);
                depth_at = Instant::now();
                depth_stale = worked;
            }
            if worked {
                continue;
            }
            if claim {
                // Nothing was due: sleep until the next stored row is.
                claim_at = match self.store.next_due_at(self.kind).await {
                    Ok(Some(at)) => instant_at(at),
                    _ => Instant::now() + Duration::from_secs(30),
                }
                .clamp(
                    Instant::now() + Duration::from_millis(50),
                    Instant::now() + Duration::from_secs(30),
                );
            }
            let wake_at = if depth_stale {
                claim_at.min(depth_at + Duration::from_secs(1))
            } else {
                claim_at
            };
            tokio::select! {
                _ = self.outbox_wake.notified() => {}
                _ = tokio::time::sleep_until(wake_at.into()) => {}
                _ = shutdown.changed() => {}
            }
        }
    }

    /// Sends `rows` concurrently and settles them; returns the earliest time a row was
    /// put back for a later attempt. A row comes with its payload when the router handed
    /// it over; rows claimed from the store have theirs read from the row.
    async fn outbox_pass(
        self: &Arc<Self>,
        rows: Vec<(OutboxRow, Option<OutboxPayload>)>,
    ) -> Option<i64> {
        // The sends run concurrently inside this task: a task each would cost a spawn and
        // a cross-thread wake-up per message. A send that panics counts as settled-failed
        // for this pass (its row stays leased and is retried when the lease ends).
        let mut sends = FuturesUnordered::new();
        let mut retry_at: Option<i64> = None;
        let mut sent = Vec::with_capacity(rows.len());
        let mut answers = Vec::with_capacity(rows.len());
        let mut took = |done: std::thread::Result<Attempt>, retry_at: &mut Option<i64>| match done {
            Ok(Attempt::Delivered(d)) => {
                let Delivered { sent: row, answer } = *d;
                sent.push(row);
                answers.push(answer);
            }
            Ok(Attempt::Retry(at)) => *retry_at = Some(retry_at.map_or(at, |r| r.min(at))),
            Ok(Attempt::Settled) => {}
            Err(_) => {
                tracing::error!(domain = %self.domain, "outbox: a bridge's send panicked")
            }
        };
        for (row, payload) in rows {
            let session = self
                .lock_sessions()
                .get(&row.account)
                .and_then(|s| s.session.clone());
            match session {
                Some(session) => {
                    // Most sends end at their first poll (a bridge that only queues the
                    // message); such a send never joins `sends`, where it would cost a
                    // task of its own and the bookkeeping of its wake-ups. Boxed, the
                    // send (over a kilobyte) is moved once instead of three times.
                    let mut send = Box::pin(
                        AssertUnwindSafe(self.deliver(row, payload, session)).catch_unwind(),
                    );
                    match futures_util::poll!(send.as_mut()) {
                        Poll::Ready(done) => took(done, &mut retry_at),
                        Poll::Pending => sends.push(send),
                    }
                }
                None => {
                    // The session is not up (yet): keep the row and try again soon.
                    let at = now_ms() + retry_delay_ms(0);
                    let _ = self
                        .store
                        .retry_later(row.id, at, "the user's session is not running")
                        .await;
                    retry_at = Some(retry_at.map_or(at, |r| r.min(at)));
                }
            }
        }
        while let Some(done) = sends.next().await {
            took(done, &mut retry_at);
        }
        drop(sends);
        if !sent.is_empty() {
            let n = sent.len();
            if let Err(e) = self.store.complete_sent(sent).await {
                // The rows stay leased and are sent again when the lease ends; the receipt
                // waits for that, so the user never gets one for an unsettled row twice.
                tracing::error!(domain = %self.domain, "outbox: cannot settle {n} delivered row(s): {e}");
                let at = now_ms() + LEASE_MS;
                return Some(retry_at.map_or(at, |r| r.min(at)));
            }
            let n = n as u64;
            self.settled.send_modify(|v| *v += n);
            // Receipts only once the store says the rows are settled.
            self.metrics.messages(self.kind.as_str(), "out", "ok", n);
            // The receipts go to the writer together, in order with any notices.
            let mut receipts = Vec::with_capacity(answers.len());
            for d in answers {
                let Answer {
                    receipt_now,
                    contact,
                    row,
                    notice,
                } = d;
                let notice = notice.map(|text| {
                    let text = format!("to {contact}: {text}");
                    crate::stanza::message(&self.domain, &row.from_jid, "chat", &text)
                });
                if receipt_now && let Some(r) = receipt(row, contact) {
                    receipts.push(r);
                }
                if let Some(m) = notice {
                    self.out.send_receipts(std::mem::take(&mut receipts)).await;
                    self.send(m).await;
                }
            }
            self.out.send_receipts(receipts).await;
        }
        retry_at
    }

    /// Sends one row; returns what to settle when it was delivered, and settles failures
    /// itself. The store lookups and failure paths are boxed: a batch holds hundreds of
    /// these futures at once, and unboxed they would each be as large as the largest.
    async fn deliver(
        &self,
        mut row: OutboxRow,
        payload: Option<OutboxPayload>,
        session: Arc<dyn ferry_bridge_api::Session>,
    ) -> Attempt {
        let payload = match payload.map_or_else(|| serde_json::from_str(&row.payload), Ok) {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(id = row.id, "unreadable outbox row: {e}");
                let _ = Box::pin(self.store.mark_failed(row.id, "unreadable outbox row")).await;
                return Attempt::Settled;
            }
        };
        let mut in_reply_to = match &payload.reply_to {
            Some(x) => Box::pin(self.store.remote_for_xmpp(row.account, x))
                .await
                .ok()
                .flatten()
                .map(|m| m.remote_message_id),
            None => None,
        };
        // A message in a thread without an explicit reply answers the thread's latest.
        if in_reply_to.is_none()
            && let Some(t) = &payload.thread
        {
            in_reply_to = Box::pin(self.store.latest_in_thread(row.account, t))
                .await
                .ok()
                .flatten()
                .map(|m| m.remote_message_id);
        }
        let OutboxPayload {
            body,
            subject,
            thread,
            links,
            sent_at_ms,
            contact,
            to_display,
            reply_to: _,
        } = payload;
        // `kind-ROW`, built without the formatting machinery (it cost more than the rest
        // of building the message).
        let mut key = String::with_capacity(24);
        key.push_str(self.kind.as_str());
        key.push('-');
        key.push_str(itoa::Buffer::new().format(row.id));
        let msg = Outbound {
            key,
            body,
            subject,
            thread,
            in_reply_to,
            links,
            sent_at_ms,
            to_display,
        };
        // Nothing after the send reads the recipient.
        let to = RemoteId(std::mem::take(&mut row.recipient));
        let result = match tokio::time::timeout(SEND_TIMEOUT, session.send(&to, &msg)).await {
            Ok(r) => r,
            Err(_) => Err(BridgeError::transient(
                "the upstream did not answer in time",
            )),
        };
        let bridge = self.kind.as_str();
        match result {
            Ok(SendReceipt {
                remote_message_id,
                delivered,
                notice,
            }) => {
                return Attempt::Delivered(Box::new(Delivered {
                    sent: SentRow {
                        id: row.id,
                        account: row.account,
                        remote_message_id,
                        thread: msg.thread,
                    },
                    answer: Answer {
                        receipt_now: delivered,
                        contact,
                        row,
                        notice,
                    },
                }));
            }
            Err(e) if e.is_transient() && row.attempts < MAX_ATTEMPTS => {
                let at = now_ms() + retry_delay_ms(row.attempts);
                tracing::info!(
                    id = row.id,
                    attempt = row.attempts,
                    "send failed, will retry: {}",
                    e.text
                );
                self.metrics.message(bridge, "out", "retry");
                let _ = Box::pin(self.store.retry_later(row.id, at, &e.text)).await;
                return Attempt::Retry(at);
            }
            Err(e) => {
                tracing::info!(id = row.id, "send failed for good: {}", e.text);
                self.metrics.message(bridge, "out", "error");
                let _ = Box::pin(self.store.mark_failed(row.id, &e.text)).await;
                let cond = if e.kind == ErrorKind::Transient {
                    Condition::RemoteServerTimeout
                } else {
                    condition_for(e.kind)
                };
                Box::pin(self.send_failure(&row, &contact, cond, &e.text)).await;
            }
        }
        Attempt::Settled
    }

    /// The XEP-0184 receipt for a delivered message, from the contact.
    pub async fn send_receipt(&self, row: OutboxRow, contact: String) {
        if let Some(r) = receipt(row, contact) {
            self.out.send_receipts(vec![r]).await;
        }
    }

    /// A message error telling the user their message will not arrive, and why.
    pub async fn send_failure(&self, row: &OutboxRow, contact: &str, cond: Condition, text: &str) {
        let m = Element::new("message", NS_COMPONENT)
            .with_attr("type", "error")
            .with_attr("from", contact)
            .with_attr("to", &row.from_jid)
            .with_opt_attr("id", row.stanza_id.clone())
            .with_child(error_element(cond, Some(text)));
        self.send(m).await;
    }
}

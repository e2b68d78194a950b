//! One registered user's side of the SMS bridge: texts go out from their number through its
//! provider (links as MMS media where the provider carries media, else in the text), and
//! the gateway's presence follows whether that provider answers.

use std::sync::Arc;

use async_trait::async_trait;
use ferry_bridge_api::{
    BridgeError, EventSink, Outbound, RemoteEvent, RemoteId, SendReceipt, Session, SessionStatus,
    Shutdown,
};

use crate::Inner;
use crate::number::Number;
use crate::provider::{OutText, Provider};
use crate::segments::segments;

pub struct SmsSession {
    inner: Arc<Inner>,
    number: Number,
    provider: Arc<dyn Provider>,
}

impl SmsSession {
    pub(crate) fn new(inner: Arc<Inner>, number: Number, provider: Arc<dyn Provider>) -> Self {
        SmsSession {
            inner,
            number,
            provider,
        }
    }

    fn status(&self) -> SessionStatus {
        match self.inner.health.problem(self.provider.name()) {
            None => SessionStatus::Online(format!("{} via {}", self.number, self.provider.name())),
            Some(why) => SessionStatus::Failing(format!(
                "SMS provider {} is failing: {why}",
                self.provider.name()
            )),
        }
    }
}

/// A reference a provider can carry back: letters, digits and `-` only.
fn reference(key: &str) -> String {
    key.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(64)
        .collect()
}

#[async_trait]
impl Session for SmsSession {
    async fn run(&self, events: EventSink, mut shutdown: Shutdown) -> Result<(), BridgeError> {
        let mut changes = self.inner.health.watch();
        let mut last = None;
        loop {
            let now = self.status();
            if last.as_ref() != Some(&now) {
                events.emit(RemoteEvent::Status(now.clone())).await?;
                last = Some(now);
            }
            tokio::select! {
                r = changes.changed() => if r.is_err() { return Ok(()) },
                _ = shutdown.changed() => if *shutdown.borrow() { return Ok(()) },
            }
        }
    }

    async fn send(&self, to: &RemoteId, msg: &Outbound) -> Result<SendReceipt, BridgeError> {
        if self
            .inner
            .store
            .opted_out(self.number.as_str(), to.as_str())
            .await?
        {
            return Err(crate::opted_out());
        }
        let mut body = msg.body.clone();
        let media = if self.provider.supports_media() {
            msg.links.clone()
        } else {
            for link in &msg.links {
                if !body.contains(link.as_str()) {
                    if !body.is_empty() {
                        body.push('\n');
                    }
                    body.push_str(link);
                }
            }
            Vec::new()
        };
        let text = OutText {
            from: self.number.as_str().to_owned(),
            to: to.as_str().to_owned(),
            body,
            media,
            reference: reference(&msg.key),
        };
        let result = self.provider.send(&text).await;
        self.inner.health.record(self.provider.name(), &result);
        let accepted = result?;
        let seg = segments(&text.body);
        let notice = (seg.count > 1).then(|| {
            format!(
                "sent as {} SMS segments ({}, {} characters)",
                seg.count,
                seg.encoding.as_str(),
                seg.units
            )
        });
        Ok(SendReceipt {
            remote_message_id: accepted.message_id,
            delivered: !accepted.reports,
            notice,
        })
    }
}

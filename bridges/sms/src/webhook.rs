//! The providers' webhooks (`/sms/{provider}/inbound` and `/status`) and the deliverer that
//! hands kept texts to XMPP.
//!
//! A webhook is verified against the raw request before anything is read; a bad signature
//! gets 403 and nothing else happens. A text is kept in the store (unique by provider and
//! message id) before the provider gets its answer, so a repeated webhook is taken once
//! and a crash after the answer loses nothing: the deliverer picks up whatever is kept and
//! not yet handed on.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use ferry_bridge_api::{BridgeError, ErrorKind, Hub, InboundMessage, RemoteEvent, RemoteId};

use crate::number::Number;
use crate::provider::{
    Delivery, Event, Hook, HookError, InboundText, MediaRef, Request, StatusReport,
};
use crate::store::{NewInbound, NewPart};
use crate::{Inner, START_WORDS, STOP_WORDS, now_ms};

/// How long delivered texts and unfinished parts are kept (for de-duplication of late
/// repeats).
const KEEP_MS: i64 = 7 * 24 * 3_600_000;

pub(crate) fn routes(inner: Arc<Inner>) -> Router {
    Router::new()
        .route("/sms/{provider}/{hook}", any(handle))
        .with_state(inner)
}

fn count(inner: &Inner, outcome: &'static str) {
    if let Some(hub) = inner.hub.get() {
        hub.count("ferry_sms_webhooks_total", outcome);
    }
}

async fn handle(
    State(inner): State<Arc<Inner>>,
    Path((name, hook)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let hook = match hook.as_str() {
        "inbound" => Hook::Inbound,
        "status" => Hook::Status,
        _ => return StatusCode::NOT_FOUND.into_response(),
    };
    let Some(provider) = inner.providers.get(&name).cloned() else {
        return StatusCode::NOT_FOUND.into_response();
    };
    if method != Method::POST && method != Method::GET {
        return StatusCode::METHOD_NOT_ALLOWED.into_response();
    }
    let query = uri.query().unwrap_or_default();
    let mut url = format!("{}/sms/{name}/{}", inner.settings.public_url, hook.as_str());
    if !query.is_empty() {
        url.push('?');
        url.push_str(query);
    }
    let req = Request {
        method: method.as_str(),
        url: &url,
        query,
        headers: &headers,
        body: &body,
        now: now_ms() / 1000,
    };
    if let Err(e) = provider.verify(hook, &req) {
        tracing::warn!(provider = %name, hook = hook.as_str(), "webhook refused: {e}");
        count(&inner, "forbidden");
        return (StatusCode::FORBIDDEN, "forbidden\n").into_response();
    }
    let events = match provider.parse(hook, &req) {
        Ok(ev) => ev,
        Err(e) => {
            tracing::warn!(provider = %name, hook = hook.as_str(), "unreadable webhook: {e}");
            count(&inner, "bad_request");
            let status = match e {
                HookError::Forbidden(_) => StatusCode::FORBIDDEN,
                HookError::BadRequest(_) => StatusCode::BAD_REQUEST,
            };
            return (status, "bad request\n").into_response();
        }
    };
    let mut outcome = "ok";
    for ev in events {
        let r = match ev {
            Event::Inbound(t) => take_inbound(&inner, &name, t).await,
            Event::Status(s) => take_status(&inner, &name, s).await.map(|()| true),
        };
        match r {
            Ok(true) => {}
            Ok(false) => outcome = "duplicate",
            Err(e) => {
                // The provider will deliver it again; nothing was kept.
                tracing::error!(provider = %name, "webhook not kept: {e}");
                count(&inner, "error");
                return (StatusCode::SERVICE_UNAVAILABLE, "try again later\n").into_response();
            }
        }
    }
    count(&inner, outcome);
    let ack = provider.ack(hook);
    (
        ack.status,
        [(header::CONTENT_TYPE, ack.content_type)],
        ack.body,
    )
        .into_response()
}

/// Keeps an inbound text; false when it was a repeat (or is waiting for its other parts).
async fn take_inbound(inner: &Inner, provider: &str, t: InboundText) -> Result<bool, BridgeError> {
    let (Some(to), Some(from)) = (Number::from_provider(&t.to), Number::from_provider(&t.from))
    else {
        tracing::warn!(
            provider,
            "inbound text without a readable sender or recipient dropped"
        );
        return Ok(true);
    };
    let (message_id, body) = match &t.part {
        Some(part) if part.total > 1 => {
            let joined = inner
                .store
                .put_part(&NewPart {
                    provider: provider.to_owned(),
                    sender: from.as_str().to_owned(),
                    reference: part.reference.clone(),
                    index: part.index,
                    total: part.total,
                    body: t.text.clone(),
                })
                .await?;
            match joined {
                Some(text) => (format!("concat-{}-{}", from, part.reference), text),
                None => return Ok(true),
            }
        }
        _ => (t.message_id.clone(), t.text.clone()),
    };
    let Some(account) = inner.store.owner_account(to.as_str()).await? else {
        tracing::warn!(provider, number = %to, "text for a number no registered user holds dropped");
        return Ok(true);
    };
    let media = serde_json::to_string(
        &t.media
            .iter()
            .map(|m| serde_json::json!({"url": m.url, "content_type": m.content_type}))
            .collect::<Vec<_>>(),
    )
    .unwrap_or_else(|_| "[]".to_owned());
    let fresh = inner
        .store
        .accept_inbound(&NewInbound {
            provider: provider.to_owned(),
            message_id,
            account,
            sender: from.as_str().to_owned(),
            recipient: to.as_str().to_owned(),
            body: body.clone(),
            media,
        })
        .await?;
    if !fresh {
        if let Some(hub) = inner.hub.get() {
            hub.count_message(ferry_bridge_api::BridgeKind::Sms, "in", "duplicate");
        }
        return Ok(false);
    }
    let word = body.trim().to_ascii_uppercase();
    if STOP_WORDS.contains(&word.as_str()) {
        inner
            .store
            .set_opt_out(to.as_str(), from.as_str(), true)
            .await?;
        tracing::info!(number = %to, "a correspondent opted out (STOP)");
    } else if START_WORDS.contains(&word.as_str()) {
        inner
            .store
            .set_opt_out(to.as_str(), from.as_str(), false)
            .await?;
        tracing::info!(number = %to, "a correspondent opted back in");
    }
    inner.wake.notify_one();
    Ok(true)
}

/// Hands a delivery report to the core, for the account that sent the text.
async fn take_status(inner: &Inner, provider: &str, s: StatusReport) -> Result<(), BridgeError> {
    if s.delivery == Delivery::Pending {
        return Ok(());
    }
    let mut account = inner.store.account_for_sent(&s.message_id).await?;
    if account.is_none()
        && let Some(from) = s.from.as_deref().and_then(Number::from_provider)
    {
        account = inner.store.owner_account(from.as_str()).await?;
    }
    let Some(account) = account else {
        tracing::info!(
            provider,
            "delivery report for a text ferry does not know ignored"
        );
        return Ok(());
    };
    let Some(hub) = inner.hub.get() else {
        return Err(BridgeError::transient("the gateway is starting"));
    };
    let event = match s.delivery {
        Delivery::Delivered => RemoteEvent::Delivered {
            remote_message_id: s.message_id,
        },
        Delivery::Failed(why) => RemoteEvent::Failed {
            remote_message_id: s.message_id,
            error: BridgeError::new(ErrorKind::RecipientUnavailable, why),
        },
        Delivery::Pending => return Ok(()),
    };
    hub.events
        .send((account, event))
        .await
        .map_err(|_| BridgeError::transient("ferry is shutting down"))
}

/// Gateway-wide work: checks the providers' credentials at start and every few minutes,
/// hands kept texts to XMPP, and forgets old ones.
pub(crate) async fn serve(inner: Arc<Inner>, hub: Hub) {
    let mut shutdown = hub.shutdown.clone();
    let checker = {
        let inner = Arc::clone(&inner);
        let mut shutdown = hub.shutdown.clone();
        tokio::spawn(async move {
            loop {
                inner.check_providers().await;
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(300)) => {}
                    _ = shutdown.changed() => if *shutdown.borrow() { return },
                }
            }
        })
    };
    let mut last_prune = tokio::time::Instant::now();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let worked = deliver_pending(&inner, &hub).await;
        if last_prune.elapsed() > Duration::from_secs(3600) {
            last_prune = tokio::time::Instant::now();
            if let Err(e) = inner.store.prune(now_ms() - KEEP_MS).await {
                tracing::warn!("sms: pruning failed: {e}");
            }
        }
        if worked {
            continue;
        }
        tokio::select! {
            _ = inner.wake.notified() => {}
            _ = tokio::time::sleep(Duration::from_secs(30)) => {}
            _ = shutdown.changed() => {}
        }
    }
    checker.abort();
}

/// Hands up to a batch of kept texts to the core; true if there were any.
async fn deliver_pending(inner: &Inner, hub: &Hub) -> bool {
    let pending = match inner.store.pending_inbound(256).await {
        Ok(p) => p,
        Err(e) => {
            tracing::error!("sms: cannot read kept texts: {e}");
            return false;
        }
    };
    if pending.is_empty() {
        return false;
    }
    for p in pending {
        let t = p.text;
        let mut links = Vec::new();
        let mut body = t.body.clone();
        let media: Vec<MediaRef> = serde_json::from_str::<Vec<serde_json::Value>>(&t.media)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|v| {
                Some(MediaRef {
                    url: v.get("url")?.as_str()?.to_owned(),
                    content_type: v
                        .get("content_type")
                        .and_then(|c| c.as_str())
                        .map(str::to_owned),
                })
            })
            .collect();
        for (i, m) in media.iter().enumerate() {
            match fetch_media(inner, &t.provider, m, i).await {
                Ok(url) => links.push(url),
                Err(e) => {
                    tracing::warn!(provider = %t.provider, "MMS media not fetched: {e}");
                    body.push_str(&format!("\n[media not available: {}]", e.text));
                }
            }
        }
        if body.is_empty() && !links.is_empty() {
            body = links.join("\n");
        }
        let msg = InboundMessage {
            from: Some(RemoteId(t.sender.clone())),
            remote_message_id: format!("{}:{}", t.provider, t.message_id),
            body,
            links,
            ..Default::default()
        };
        if hub
            .events
            .send((t.account, RemoteEvent::Message(msg)))
            .await
            .is_err()
        {
            return false;
        }
        if let Err(e) = inner.store.inbound_delivered(p.id).await {
            // The core drops the repeat by its id; the text is not lost either way.
            tracing::warn!("sms: cannot mark a text delivered: {e}");
            return false;
        }
    }
    true
}

/// Fetches one media item and keeps it under `/media/…`; the public link.
async fn fetch_media(
    inner: &Inner,
    provider: &str,
    m: &MediaRef,
    index: usize,
) -> Result<String, BridgeError> {
    let p = inner
        .providers
        .get(provider)
        .ok_or_else(|| BridgeError::permanent("the provider is gone"))?;
    let got = p.fetch_media(m, inner.settings.max_media_bytes).await?;
    let ext = match got
        .content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
    {
        "image/jpeg" => "jpg",
        "image/png" => "png",
        "image/gif" => "gif",
        "image/webp" => "webp",
        "video/mp4" => "mp4",
        "audio/mpeg" => "mp3",
        "audio/amr" => "amr",
        "text/vcard" | "text/x-vcard" => "vcf",
        "text/plain" => "txt",
        _ => "bin",
    };
    let name = format!("mms-{}.{ext}", index + 1);
    let token = inner
        .store
        .put_media(&name, &got.content_type, &got.bytes)
        .await?;
    Ok(format!(
        "{}/media/{token}/{name}",
        inner.settings.public_url
    ))
}

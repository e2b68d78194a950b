//! A recording HTTP/1.1 server for tests that talk to a provider's API: it listens on
//! `127.0.0.1:0`, keeps every request it gets (method, path, query, headers, body) and
//! answers each path with the status, content type and body a test configured for it
//! (404 with an empty JSON object for paths it was not told about). Tests wait for requests
//! with [`Recorder::wait_for`], which wakes on arrival instead of sleeping.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// One request as the server received it.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    /// The raw query string, without `?`; empty when there was none.
    pub query: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Recorded {
    /// A header's value as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The body as text (lossy).
    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body read as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("request body is json")
    }

    /// The body read as `application/x-www-form-urlencoded` pairs, decoded.
    pub fn form(&self) -> Vec<(String, String)> {
        pairs(&self.body)
    }

    /// The first value of `key` in the form body.
    pub fn form_value(&self, key: &str) -> Option<String> {
        self.form()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }

    /// The query string's pairs, decoded.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        pairs(self.query.as_bytes())
    }

    /// The first value of `key` in the query string.
    pub fn query_value(&self, key: &str) -> Option<String> {
        self.query_pairs()
            .into_iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

fn pairs(raw: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(raw)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The answer configured for a path.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

impl Reply {
    pub fn new(status: u16, content_type: &str, body: &str) -> Self {
        Reply {
            status,
            content_type: content_type.to_owned(),
            body: body.to_owned(),
        }
    }

    pub fn json(status: u16, body: &str) -> Self {
        Reply::new(status, "application/json", body)
    }

    pub fn text(status: u16, body: &str) -> Self {
        Reply::new(status, "text/plain", body)
    }
}

struct Shared {
    requests: Mutex<Vec<Recorded>>,
    replies: Mutex<HashMap<String, Reply>>,
    /// How many requests have been recorded; wakes [`Recorder::wait_for`].
    count: watch::Sender<usize>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The server; it stops when dropped.
pub struct Recorder {
    /// `http://127.0.0.1:{port}`, without a trailing slash.
    pub url: String,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Recorder {
    /// Binds `127.0.0.1:0` and starts serving on the current runtime.
    pub async fn start() -> Recorder {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().expect("local address");
        let (count, _) = watch::channel(0usize);
        let shared = Arc::new(Shared {
            requests: Mutex::new(Vec::new()),
            replies: Mutex::new(HashMap::new()),
            count,
        });
        let app = Router::new()
            .fallback(record)
            .with_state(Arc::clone(&shared));
        let task = tokio::spawn(async move {
            // Ends only when the task is aborted (on drop) or the listener fails.
            let _ = axum::serve(listener, app).await;
        });
        Recorder {
            url: format!("http://{addr}"),
            shared,
            task,
        }
    }

    /// Answers requests to `path` (exact match, without the query) with `reply` from now on.
    pub fn reply(&self, path: &str, reply: Reply) {
        lock(&self.shared.replies).insert(path.to_owned(), reply);
    }

    /// Every request recorded so far, oldest first.
    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.shared.requests).clone()
    }

    /// Forgets the recorded requests (the configured replies stay).
    pub fn clear(&self) {
        lock(&self.shared.requests).clear();
        self.shared.count.send_replace(0);
    }

    /// Waits until at least `n` requests have been recorded, for at most `deadline`, and
    /// returns all of them; an error says how many had come when the time ran out.
    pub async fn wait_for(&self, n: usize, deadline: Duration) -> Result<Vec<Recorded>, String> {
        let mut rx = self.shared.count.subscribe();
        match tokio::time::timeout(deadline, rx.wait_for(|c| *c >= n)).await {
            Ok(Ok(_)) => Ok(self.requests()),
            Ok(Err(_)) => Err("recorder stopped".to_owned()),
            Err(_) => Err(format!(
                "{} request(s) after {deadline:?}, wanted {n}",
                self.requests().len()
            )),
        }
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn record(
    State(shared): State<Arc<Shared>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri.path().to_owned();
    let reply = lock(&shared.replies).get(&path).cloned();
    {
        let mut requests = lock(&shared.requests);
        requests.push(Recorded {
            method: method.as_str().to_owned(),
            path,
            query: uri.query().unwrap_or_default().to_owned(),
            headers,
            body: body.to_vec(),
        });
        shared.count.send_replace(requests.len());
    }
    let reply = reply.unwrap_or_else(|| Reply::json(404, "{}"));
    let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let content_type = HeaderValue::from_str(&reply.content_type)
        .unwrap_or_else(|_| HeaderValue::from_static("application/octet-stream"));
    (status, [(header::CONTENT_TYPE, content_type)], reply.body).into_response()
}

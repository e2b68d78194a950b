//! A small HTTP/1.1 server for tests, on a tokio `TcpListener`: it serves configurable
//! routes (fixed answers, redirects, precompressed bodies, long streamed bodies, a slow
//! drip, responses held until the test releases them, ETag/Last-Modified aware 304s) and records what it saw — every request
//! (method, target, headers), connections opened and closed, requests in flight and their
//! maximum, body bytes written — so tests can assert on it and wait for it with a deadline.
//! It stops when dropped (or, deterministically, with [`TestServer::shutdown`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

/// One request as the server read it.
#[derive(Clone, Debug)]
pub struct Request {
    pub method: String,
    /// The request target, as sent (a path, or an absolute URL when sent to a proxy).
    pub target: String,
    /// Header names lowercased, values as sent.
    pub headers: Vec<(String, String)>,
}

impl Request {
    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// How a route's body is sent.
#[derive(Clone, Debug)]
pub enum Body {
    /// These bytes, with `Content-Length`.
    Bytes(Vec<u8>),
    /// `total` bytes of `x` in 64 KiB writes; chunked, or with `Content-Length` when
    /// `announce_length`.
    Stream { total: u64, announce_length: bool },
    /// One byte every `every`, forever (chunked).
    Drip { every: Duration },
}

/// What the server answers on one path.
#[derive(Clone, Debug)]
pub struct Route {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
    /// Waited before answering (while the request counts as in flight).
    pub held: bool,
    /// Answer 304 when `If-None-Match` equals this route's `ETag` or `If-Modified-Since`
    /// equals its `Last-Modified`, byte for byte.
    pub conditional: bool,
}

impl Route {
    /// 200 with `body`.
    pub fn ok(body: impl Into<Vec<u8>>) -> Route {
        Route {
            status: 200,
            headers: Vec::new(),
            body: Body::Bytes(body.into()),
            held: false,
            conditional: false,
        }
    }

    /// `code` with an empty body.
    pub fn status(code: u16) -> Route {
        Route {
            status: code,
            ..Route::ok(Vec::new())
        }
    }

    /// `code` with `Location: location`.
    pub fn redirect(code: u16, location: &str) -> Route {
        Route::status(code).header("Location", location)
    }

    /// 200 with a streamed body (see [`Body`]).
    pub fn body(body: Body) -> Route {
        Route {
            body,
            ..Route::ok(Vec::new())
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Route {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Holds each answer (the request counts as in flight) until the test lets it go
    /// with [`TestServer::release`]; never released, it never answers.
    pub fn held(mut self) -> Route {
        self.held = true;
        self
    }

    pub fn conditional(mut self) -> Route {
        self.conditional = true;
        self
    }

    fn header_value(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// What the server has seen so far.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    pub connections: usize,
    pub closed: usize,
    pub requests: Vec<Request>,
    pub in_flight: usize,
    pub max_in_flight: usize,
    /// Body bytes successfully written, over all responses.
    pub body_bytes_sent: u64,
}

impl Stats {
    /// The targets requested, in order.
    pub fn targets(&self) -> Vec<String> {
        self.requests.iter().map(|r| r.target.clone()).collect()
    }
}

struct State {
    routes: Mutex<HashMap<String, Route>>,
    fallback: Mutex<Route>,
    stats: Mutex<Stats>,
    changed: watch::Sender<u64>,
    /// Permits for held answers; the test adds them.
    gate: tokio::sync::Semaphore,
}

impl State {
    fn stats(&self) -> MutexGuard<'_, Stats> {
        self.stats.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Changes the stats and wakes whoever waits on them.
    fn update(&self, change: impl FnOnce(&mut Stats)) {
        change(&mut self.stats());
        self.changed.send_modify(|n| *n += 1);
    }

    fn route_for(&self, target: &str) -> Route {
        let routes = self.routes.lock().unwrap_or_else(|e| e.into_inner());
        let path = target.split('?').next().unwrap_or(target);
        routes
            .get(target)
            .or_else(|| routes.get(path))
            .cloned()
            .unwrap_or_else(|| {
                self.fallback
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .clone()
            })
    }
}

/// A running test server; see the module documentation.
pub struct TestServer {
    addr: SocketAddr,
    state: Arc<State>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        // Dropping the accept task drops the listener and the JoinSet of connections,
        // which aborts them all.
        self.task.abort();
    }
}

impl TestServer {
    /// Starts on `127.0.0.1`, on a free port.
    pub async fn start() -> TestServer {
        TestServer::bind("127.0.0.1:0")
            .await
            .expect("bind a test server on 127.0.0.1")
    }

    /// Starts on `addr` (`127.0.0.2:0`, `[::1]:0` …).
    pub async fn bind(addr: &str) -> std::io::Result<TestServer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (changed, _) = watch::channel(0);
        let state = Arc::new(State {
            routes: Mutex::new(HashMap::new()),
            fallback: Mutex::new(Route::status(404)),
            stats: Mutex::new(Stats::default()),
            changed,
            gate: tokio::sync::Semaphore::new(0),
        });
        let task = tokio::spawn(accept_loop(listener, state.clone()));
        Ok(TestServer { addr, state, task })
    }

    /// Lets `n` held answers go (see [`Route::held`]).
    pub fn release(&self, n: usize) {
        self.state.gate.add_permits(n);
    }

    /// Stops the server and waits until its listener is closed.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `host:port` as it appears in a URL (`127.0.0.1:4000`, `[::1]:4000`).
    pub fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// `http://host:port{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Serves `route` on `path` (matched on the full target first, then without the query).
    pub fn route(&self, path: &str, route: Route) {
        self.state
            .routes
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_owned(), route);
    }

    /// Serves `route` on every path that has no route of its own (default: 404).
    pub fn fallback(&self, route: Route) {
        *self
            .state
            .fallback
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = route;
    }

    pub fn stats(&self) -> Stats {
        self.state.stats().clone()
    }

    pub fn connections(&self) -> usize {
        self.state.stats().connections
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.stats().requests.clone()
    }

    /// Waits until `done` holds for the stats, at most `deadline`; says whether it did.
    pub async fn wait_for(&self, deadline: Duration, done: impl Fn(&Stats) -> bool) -> bool {
        let mut changes = self.state.changed.subscribe();
        let wait = async {
            loop {
                if done(&self.state.stats()) {
                    return;
                }
                if changes.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(deadline, wait).await.is_ok() && done(&self.state.stats())
    }
}

async fn accept_loop(listener: TcpListener, state: Arc<State>) {
    let mut connections = JoinSet::new();
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        while connections.try_join_next().is_some() {}
        state.update(|s| s.connections += 1);
        let state = state.clone();
        connections.spawn(async move {
            serve(stream, &state).await;
            state.update(|s| s.closed += 1);
        });
    }
}

/// Decrements the in-flight count however the request ends (even by abort).
struct InFlight<'a>(&'a State);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.update(|s| s.in_flight -= 1);
    }
}

async fn serve(stream: TcpStream, state: &State) {
    let mut stream = BufReader::new(stream);
    loop {
        let Some(request) = read_head(&mut stream).await else {
            return;
        };
        let route = state.route_for(&request.target);
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        state.update(|s| {
            s.requests.push(request.clone());
            s.in_flight += 1;
            s.max_in_flight = s.max_in_flight.max(s.in_flight);
        });
        let _in_flight = InFlight(state);
        if route.held {
            match state.gate.acquire().await {
                Ok(permit) => permit.forget(),
                Err(_) => return,
            }
        }
        if respond(stream.get_mut(), &route, &request, state)
            .await
            .is_err()
            || close
        {
            return;
        }
    }
}

async fn read_head(stream: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    stream.read_line(&mut line).await.ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let mut headers = Vec::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await.ok()? == 0 {
            return None;
        }
        let trimmed = line.trim_end_matches(['\r', '\n']);
        if trimmed.is_empty() {
            break;
        }
        let (name, value) = trimmed.split_once(':')?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        if headers.len() > 100 {
            return None;
        }
    }
    Some(Request {
        method,
        target,
        headers,
    })
}

async fn respond(
    out: &mut TcpStream,
    route: &Route,
    request: &Request,
    state: &State,
) -> std::io::Result<()> {
    let not_modified = route.conditional
        && (matches!(
            (request.header("if-none-match"), route.header_value("etag")),
            (Some(sent), Some(ours)) if sent == ours
        ) || matches!(
            (request.header("if-modified-since"), route.header_value("last-modified")),
            (Some(sent), Some(ours)) if sent == ours
        ));
    let status = if not_modified { 304 } else { route.status };
    let mut head = format!("HTTP/1.1 {status} {}\r\n", reason(status));
    for (name, value) in &route.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    let body = if not_modified {
        &Body::Bytes(Vec::new())
    } else {
        &route.body
    };
    match body {
        _ if not_modified => {}
        Body::Bytes(bytes) => head.push_str(&format!("Content-Length: {}\r\n", bytes.len())),
        Body::Stream {
            total,
            announce_length: true,
        } => head.push_str(&format!("Content-Length: {total}\r\n")),
        Body::Stream { .. } | Body::Drip { .. } => head.push_str("Transfer-Encoding: chunked\r\n"),
    }
    head.push_str("\r\n");
    out.write_all(head.as_bytes()).await?;
    match body {
        Body::Bytes(bytes) => {
            out.write_all(bytes).await?;
            state.update(|s| s.body_bytes_sent += bytes.len() as u64);
        }
        Body::Stream {
            total,
            announce_length,
        } => {
            let block = vec![b'x'; 64 * 1024];
            let mut left = *total;
            while left > 0 {
                let n = left.min(block.len() as u64) as usize;
                if *announce_length {
                    out.write_all(&block[..n]).await?;
                } else {
                    out.write_all(format!("{n:x}\r\n").as_bytes()).await?;
                    out.write_all(&block[..n]).await?;
                    out.write_all(b"\r\n").await?;
                }
                left -= n as u64;
                state.update(|s| s.body_bytes_sent += n as u64);
            }
            if !*announce_length {
                out.write_all(b"0\r\n\r\n").await?;
            }
        }
        Body::Drip { every } => {
            // The drip's pace: one byte per tick.
            let mut ticks = tokio::time::interval(*every);
            loop {
                ticks.tick().await;
                out.write_all(b"1\r\nx\r\n").await?;
                out.flush().await?;
                state.update(|s| s.body_bytes_sent += 1);
            }
        }
    }
    out.flush().await
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        301 => "Moved Permanently",
        302 => "Found",
        303 => "See Other",
        304 => "Not Modified",
        307 => "Temporary Redirect",
        308 => "Permanent Redirect",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Whatever",
    }
}

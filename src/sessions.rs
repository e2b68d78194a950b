//! One session per registered user and bridge: log in, run until stopped, and when the
//! upstream fails, say so on the gateway's presence and try again with backoff.

use std::sync::Arc;
use std::time::Duration;

use ferry_bridge_api::{AccountId, Credentials, EventSink, SessionStatus};
use tokio::sync::watch;

use crate::component::backoff;
use crate::gateway::{Gateway, SessionEntry};

impl Gateway {
    /// Starts (in the background) the session of a registered user.
    pub fn start_session(self: &Arc<Self>, account: AccountId, user: String, creds: Credentials) {
        let (stop_tx, stop_rx) = watch::channel(false);
        {
            let mut sessions = self.lock_sessions();
            if let Some(old) = sessions.remove(&account) {
                let _ = old.stop.send(true);
            }
            sessions.insert(
                account,
                SessionEntry {
                    user: user.clone(),
                    session: None,
                    status: SessionStatus::Failing("connecting".into()),
                    stop: stop_tx,
                },
            );
            self.metrics
                .set_sessions(self.kind.as_str(), sessions.len() as i64);
        }
        let me = Arc::clone(self);
        tokio::spawn(async move { me.supervise(account, user, creds, stop_rx).await });
    }

    /// Stops a user's session (unregistering).
    pub fn stop_session(&self, account: AccountId) {
        let mut sessions = self.lock_sessions();
        if let Some(old) = sessions.remove(&account) {
            let _ = old.stop.send(true);
        }
        self.metrics
            .set_sessions(self.kind.as_str(), sessions.len() as i64);
    }

    /// Starts the sessions of every registered user (at start-up).
    pub async fn start_all_sessions(self: &Arc<Self>) -> Result<usize, crate::store::StoreError> {
        let accounts = self.store.accounts(self.kind).await?;
        let n = accounts.len();
        for a in accounts {
            self.start_session(a.id, a.jid, a.credentials);
        }
        Ok(n)
    }

    /// Records a session's status and tells the user when it changed.
    pub async fn set_status(&self, account: AccountId, status: SessionStatus) {
        let user = {
            let mut sessions = self.lock_sessions();
            match sessions.get_mut(&account) {
                Some(e) if e.status != status => {
                    e.status = status;
                    Some(e.user.clone())
                }
                _ => None,
            }
        };
        if let Some(u) = user {
            self.send(self.gateway_presence(&u)).await;
        }
    }

    async fn supervise(
        self: Arc<Self>,
        account: AccountId,
        user: String,
        creds: Credentials,
        mut stop: watch::Receiver<bool>,
    ) {
        let mut global = self.shutdown.clone();
        let mut failures = 0u32;
        loop {
            if *stop.borrow() || *global.borrow() {
                return;
            }
            let outcome = match self.bridge.login(account, &user, creds.clone()).await {
                Ok(session) => {
                    if let Some(e) = self.lock_sessions().get_mut(&account) {
                        e.session = Some(Arc::clone(&session));
                    }
                    self.set_status(account, SessionStatus::Online(String::new()))
                        .await;
                    self.wake_outbox();
                    failures = 0;
                    // The session stops when either this user's or the process's switch flips.
                    let (tx, rx) = watch::channel(false);
                    let sink = EventSink::new(account, self.events.clone());
                    let run = session.run(sink, rx);
                    tokio::pin!(run);
                    let res = tokio::select! {
                        r = &mut run => r,
                        _ = stop.changed() => { let _ = tx.send(true); run.await }
                        _ = global.changed() => { let _ = tx.send(true); run.await }
                    };
                    if let Some(e) = self.lock_sessions().get_mut(&account) {
                        e.session = None;
                    }
                    res
                }
                Err(e) => Err(e),
            };
            if *stop.borrow() || *global.borrow() {
                return;
            }
            let why = match outcome {
                Ok(()) => "session ended".to_owned(),
                Err(e) => e.text,
            };
            failures = failures.saturating_add(1);
            tracing::warn!(domain = %self.domain, user = %user, "session failed: {why}");
            self.set_status(account, SessionStatus::Failing(why)).await;
            let delay = backoff(failures, Duration::from_secs(300));
            tokio::select! {
                _ = tokio::time::sleep(delay) => {}
                _ = stop.changed() => return,
                _ = global.changed() => return,
            }
        }
    }
}

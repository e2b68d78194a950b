//! The SQLite lane: one thread that owns a rusqlite connection to the store's SQLite file
//! and runs the outbox's writes (moving the outbox journal's rows into the table, claiming
//! due rows, settling rows the journal does not hold, and storing and settling batches
//! where the journal is not in use) as whole jobs, committing every job that is waiting in
//! one transaction.
//!
//! Why it exists: sqlx's SQLite driver runs every statement on a worker thread behind a
//! channel, so each statement costs two thread wake-ups, and a message used to cost about
//! five statements. A lane job runs all its statements for one hand-off. When jobs queue up
//! (the router storing new messages while the outbox settles sent ones) the thread takes
//! them all and runs them in one write transaction; if one fails, the transaction is rolled
//! back and each job runs again alone, so a job's failure is never another's. Every job
//! hears its outcome only after the commit (group commit), so nothing is reported stored
//! before it is. The lane shares the file with sqlx's pool (WAL, the same pragmas and busy
//! timeout), so the two see each other's commits. PostgreSQL and `sqlite::memory:` stores
//! have no lane (a second connection to an in-memory database would see another, empty
//! database).

use std::sync::Mutex;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};

use super::StoreError;

/// Work for the lane's thread: runs inside the lane's transaction, then hears how that
/// transaction ended. A job may run more than once (see [`run_group`]), so it must only
/// read what it captured.
trait Job: Send {
    /// Runs the job's statements; false if it failed.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Reports the job's result, or `failed` if the transaction did not commit.
    fn finish(self: Box<Self>, failed: Option<StoreError>);
}

/// A job made of a closure and the channel its caller waits on.
struct Call<T, F> {
    f: F,
    out: Option<Result<T, StoreError>>,
    done: tokio::sync::oneshot::Sender<Result<T, StoreError>>,
}

impl<T, F> Job for Call<T, F>
where
    T: Send,
    F: Fn(&Connection) -> Result<T, StoreError> + Send,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let out = (self.f)(conn);
        let ok = out.is_ok();
        self.out = Some(out);
        ok
    }

    fn finish(self: Box<Self>, failed: Option<StoreError>) {
        // The closure goes first: what it captured (a batch's rows, say) is then the
        // caller's alone again when the caller hears the result.
        let Call { f, out, done } = *self;
        drop(f);
        let out = match (failed, out) {
            // A failed job keeps its own error; the others hear why the commit failed.
            (_, Some(Err(e))) => Err(e),
            (Some(e), _) => Err(e),
            (None, Some(out)) => out,
            (None, None) => Err(StoreError::Closed),
        };
        let _ = done.send(out);
    }
}

/// A handle on the lane's thread. Dropping the last handle ends the thread.
pub(crate) struct Lane {
    jobs: Mutex<Option<mpsc::Sender<Box<dyn Job>>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl std::fmt::Debug for Lane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Lane")
    }
}

/// How many statements the connection keeps prepared.
const STATEMENT_CACHE: usize = 32;
/// The most jobs one transaction holds.
const GROUP_JOBS: usize = 256;
/// While busy, the lane commits at most once per window: a job that arrives less than a
/// window after the last commit began waits for the window to end, gathering the jobs that
/// come meanwhile into the same transaction. A job that arrives when the lane is idle is
/// committed at once, so a lone message is never held back. Each commit rewrites every
/// page it touched into the WAL, so fewer, larger commits cost much less per message
/// (BENCHMARKS.md).
const GROUP_WINDOW: Duration = Duration::from_millis(5);

impl Lane {
    /// Opens a lane on the file a `sqlite:` URL names; `None` for an in-memory database.
    /// The file must exist (sqlx's pool creates it first).
    pub(crate) fn open(url: &str) -> Result<Option<Lane>, StoreError> {
        let Some(path) = file_path(url)? else {
            return Ok(None);
        };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(lane_error)?;
        // The same settings as the pool's connections (the pool has switched the file to
        // WAL already; saying so again costs nothing).
        for pragma in [
            super::SQLITE_BUSY_TIMEOUT,
            "PRAGMA journal_mode = WAL;",
            super::SQLITE_PRAGMAS,
        ] {
            conn.execute_batch(pragma).map_err(lane_error)?;
        }
        conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
        let (tx, rx) = mpsc::channel::<Box<dyn Job>>();
        let thread = std::thread::Builder::new()
            .name("ferry-sqlite".into())
            .spawn(move || {
                let mut last: Option<Instant> = None;
                while let Ok(first) = rx.recv() {
                    let mut group = vec![first];
                    // Busy (the last commit began less than a window ago): let what comes
                    // gather until the window is over, asleep, so that jobs queue without
                    // waking the thread one by one. Idle: commit at once.
                    if let Some(until) = last.map(|at| at + GROUP_WINDOW) {
                        let left = until.saturating_duration_since(Instant::now());
                        if !left.is_zero() {
                            std::thread::sleep(left);
                        }
                    }
                    while group.len() < GROUP_JOBS {
                        match rx.try_recv() {
                            Ok(job) => group.push(job),
                            Err(_) => break,
                        }
                    }
                    last = Some(Instant::now());
                    run_group(&conn, group);
                }
            })
            .map_err(|e| StoreError::Sqlite {
                message: format!("cannot start the sqlite thread: {e}"),
                busy: false,
            })?;
        Ok(Some(Lane {
            jobs: Mutex::new(Some(tx)),
            thread: Mutex::new(Some(thread)),
        }))
    }

    /// Runs `f` on the lane's connection, inside the lane's write transaction, and returns
    /// what it returned once that transaction has committed. `f` must not begin or end
    /// transactions itself; an error from `f` undoes what `f` did and nothing else (`f` may
    /// be run a second time for that, alone in a transaction of its own).
    pub(crate) async fn call<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        self.submit(f).await
    }

    /// [`Lane::call`], except that the job is queued now, before the returned future is
    /// first polled: jobs submitted one after another run in that order.
    pub(crate) fn submit<T, F>(
        &self,
        f: F,
    ) -> impl std::future::Future<Output = Result<T, StoreError>> + Send + 'static
    where
        T: Send + 'static,
        F: Fn(&Connection) -> Result<T, StoreError> + Send + 'static,
    {
        let (done, result) = tokio::sync::oneshot::channel();
        let job: Box<dyn Job> = Box::new(Call { f, out: None, done });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|jobs| jobs.send(job).is_ok())
            .unwrap_or(false);
        async move {
            if !sent {
                return Err(StoreError::Closed);
            }
            result.await.map_err(|_| StoreError::Closed)?
        }
    }

    /// Finishes the queued jobs, closes the connection and ends the thread. Later calls
    /// fail with "the store is closed".
    pub(crate) async fn close(&self) {
        let jobs = self.jobs.lock().unwrap_or_else(|e| e.into_inner()).take();
        drop(jobs);
        let thread = self.thread.lock().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(thread) = thread {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        }
    }
}

/// Runs `group` in one write transaction and tells every job how it ended. If a job fails,
/// the transaction is rolled back and each job runs again alone in a transaction of its
/// own, so one job's failure is never another's. (Savepoints would do the same without the
/// second run, but they copy every page a job touches into a sub-journal first, which costs
/// more than the rare second run.)
fn run_group(conn: &Connection, mut group: Vec<Box<dyn Job>>) {
    let single = group.len() == 1;
    match run_together(conn, &mut group) {
        Ok(()) => group.into_iter().for_each(|job| job.finish(None)),
        // Alone, a job's own error is the answer; a failed BEGIN or COMMIT fails them all.
        Err(e) if single || !matches!(e, Failure::Job) => {
            for job in group {
                job.finish(e.store_error());
            }
        }
        Err(Failure::Job | Failure::Store(_)) => {
            for mut job in group {
                let mut alone = [job];
                let failed = run_together(conn, &mut alone).err();
                [job] = alone;
                job.finish(failed.and_then(|f| f.store_error()));
            }
        }
    }
}

/// Why a transaction did not commit.
enum Failure {
    /// A job failed (it holds its own error).
    Job,
    /// BEGIN or COMMIT failed.
    Store(StoreError),
}

impl Failure {
    /// The error to give jobs that did not fail themselves.
    fn store_error(&self) -> Option<StoreError> {
        match self {
            Failure::Job => None,
            Failure::Store(StoreError::Sqlite { message, busy }) => Some(StoreError::Sqlite {
                message: message.clone(),
                busy: *busy,
            }),
            Failure::Store(_) => Some(StoreError::Closed),
        }
    }
}

/// Runs `jobs` in one write transaction; rolls it back if any fails.
fn run_together(conn: &Connection, jobs: &mut [Box<dyn Job>]) -> Result<(), Failure> {
    exec(conn, "BEGIN IMMEDIATE").map_err(Failure::Store)?;
    let mut ok = true;
    for job in jobs.iter_mut() {
        if !job.run(conn) {
            ok = false;
            break;
        }
    }
    let end = if ok {
        exec(conn, "COMMIT").map_err(Failure::Store)
    } else {
        Err(Failure::Job)
    };
    if end.is_err() && !conn.is_autocommit() {
        let _ = exec(conn, "ROLLBACK");
    }
    end
}

/// Runs one statement that takes no parameters, through the statement cache.
fn exec(conn: &Connection, sql: &str) -> Result<(), StoreError> {
    conn.prepare_cached(sql)
        .and_then(|mut s| s.execute([]))
        .map(|_| ())
        .map_err(lane_error)
}

/// The file a `sqlite:` URL names (percent-decoded, as sqlx reads it), or `None` for an
/// in-memory database.
pub(crate) fn file_path(url: &str) -> Result<Option<std::path::PathBuf>, StoreError> {
    if super::sqlite_is_memory(url) {
        return Ok(None);
    }
    let (db, _) = super::sqlite_parts(url);
    let db = percent_encoding::percent_decode_str(db)
        .decode_utf8()
        .map_err(|_| StoreError::UnsupportedUrl("sqlite path is not UTF-8".into()))?;
    Ok(Some(std::path::PathBuf::from(db.as_ref())))
}

/// A rusqlite error as the store reports it; busy and locked are worth a retry.
pub(crate) fn lane_error(e: rusqlite::Error) -> StoreError {
    let busy = matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    );
    StoreError::Sqlite {
        message: e.to_string(),
        busy,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lane on a fresh file with one table `t (id INTEGER PRIMARY KEY)`.
    fn lane_on_file(dir: &tempfile::TempDir) -> Lane {
        let path = dir.path().join("lane.db");
        let conn = Connection::open(&path).expect("create");
        conn.execute_batch("CREATE TABLE t (id INTEGER PRIMARY KEY)")
            .expect("table");
        drop(conn);
        Lane::open(&format!("sqlite://{}", path.display()))
            .expect("open")
            .expect("a file has a lane")
    }

    fn insert(id: i64) -> impl Fn(&Connection) -> Result<i64, StoreError> + Send + 'static {
        move |conn| {
            conn.execute("INSERT INTO t (id) VALUES (?1)", [id])
                .map_err(lane_error)?;
            Ok(id)
        }
    }

    #[tokio::test]
    async fn a_failing_job_fails_alone_in_its_group() {
        use std::future::Future;
        use std::pin::Pin;
        use std::task::Poll;

        type Pending = Pin<Box<dyn Future<Output = Result<i64, StoreError>> + Send>>;
        let dir = tempfile::tempdir().expect("tempdir");
        let lane = std::sync::Arc::new(lane_on_file(&dir));
        // The first job holds the lane's thread until the others are queued behind it, so
        // they are committed together. (If a job runs again, the closed channel lets it
        // through at once.)
        let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
        let go_rx = Mutex::new(go_rx);
        let mut calls: Vec<Pending> = Vec::new();
        {
            let lane = lane.clone();
            calls.push(Box::pin(async move {
                lane.call(move |conn| {
                    let _ = go_rx.lock().map(|rx| rx.recv());
                    insert(1)(conn)
                })
                .await
            }));
        }
        // 1 is taken by then: that job fails; 2 and 3 must not fail with it.
        for id in [2, 1, 3] {
            let lane = lane.clone();
            calls.push(Box::pin(async move { lane.call(insert(id)).await }));
        }
        // One poll each queues every job, in order, before any can finish.
        std::future::poll_fn(|cx| {
            for call in calls.iter_mut() {
                assert!(call.as_mut().poll(cx).is_pending());
            }
            Poll::Ready(())
        })
        .await;
        go_tx.send(()).expect("signal");
        drop(go_tx);
        let mut results = Vec::new();
        for call in calls {
            results.push(call.await);
        }
        assert_eq!(results[0].as_ref().ok(), Some(&1));
        assert_eq!(results[1].as_ref().ok(), Some(&2));
        assert!(results[2].is_err(), "a duplicate key must fail");
        assert_eq!(results[3].as_ref().ok(), Some(&3));
        let ids = lane
            .call(|conn| {
                let mut stmt = conn
                    .prepare("SELECT id FROM t ORDER BY id")
                    .map_err(lane_error)?;
                let ids = stmt
                    .query_map([], |r| r.get::<_, i64>(0))
                    .map_err(lane_error)?
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(lane_error)?;
                Ok(ids)
            })
            .await
            .expect("read");
        assert_eq!(ids, vec![1, 2, 3]);
        lane.close().await;
        assert!(matches!(
            lane.call(insert(4)).await,
            Err(StoreError::Closed)
        ));
    }

    #[test]
    fn paths() {
        assert_eq!(file_path("sqlite::memory:").ok().flatten(), None);
        assert_eq!(
            file_path("sqlite:///var/lib/ferry/ferry.db?mode=rwc")
                .ok()
                .flatten(),
            Some("/var/lib/ferry/ferry.db".into())
        );
        assert_eq!(
            file_path("sqlite://ferry.db").ok().flatten(),
            Some("ferry.db".into())
        );
        assert_eq!(
            file_path("sqlite:/tmp/a%20b.db").ok().flatten(),
            Some("/tmp/a b.db".into())
        );
    }
}

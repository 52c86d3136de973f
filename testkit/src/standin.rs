//! A stand-in llama-swap server for tests and `swapcfg demo`: a small hyper
//! HTTP/1 server on loopback that behaves as llama-swap's real server was
//! observed to behave (`/work/shared/llama-swap/SERVER.md`, upstream 0bdb372).
//!
//! * Endpoints: `GET /health` (`OK`, never keyed); `GET /v1/models` and
//!   `/models` (OpenAI list); `/logs` (and `/logs/stream`: plain-text
//!   history); `/running` (`{"running":[{"model":…,"state":"ready"}]}`);
//!   `/api/version` (`{"build_date","commit","version"}`). With an API key
//!   every endpoint but `/health` answers 401 with `Www-Authenticate: Basic`
//!   unless the key comes as `Authorization: Bearer KEY` or `x-api-key: KEY`.
//! * A config FILE on disk (optional): its models are judged by a closure
//!   the test passes ([`Judge`]: bytes → model ids, or the server's reason),
//!   at start, on a restart and on a reload.
//! * Watch mode (as `-watch-config`): the file's mtime and size are polled
//!   every `interval` (the real server: 2 s; not the inode, so a rename to a
//!   file with the same size and mtime is not noticed).
//! * [`Standin::reload`] (SIGHUP) reloads at once. A reload logs
//!   `[INFO] reloading configuration`, then `[INFO] configuration reloaded`
//!   or `[WARN] failed to reload config: …` (`[WARN] failed to build new
//!   server during reload: …` when the reason is the server's group router
//!   error, `creating group router…`); on failure the old models keep
//!   serving.
//! * [`Standin::restart`]: the process is stopped (port closed at once) and
//!   started again after `start_delay` with a fresh log; a config it
//!   refuses leaves the port closed ([`Standin::start_error`]). The
//!   `*_hook` functions give these as closures for a scripted exec command
//!   of the in-process SSH server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

/// Judges a config file's bytes as the server would: its model ids, or why
/// the server refuses it.
pub type Judge = Arc<dyn Fn(&[u8]) -> Result<Vec<String>, String> + Send + Sync>;

/// A closure that acts on the stand-in (for a scripted exec command).
pub type Hook = Arc<dyn Fn() + Send + Sync>;

struct State {
    models: Vec<String>,
    running: Vec<String>,
    status: u16,
    api_key: Option<String>,
    requests: usize,
    /// `/logs` history (this "process"'s).
    log: String,
    logs_enabled: bool,
    up: bool,
    start_error: Option<String>,
    reloads: usize,
    restarts: usize,
    /// Bumped by every restart: a delayed start of an older one gives up.
    generation: u64,
    /// The file's (mtime, size) as last seen by the watcher.
    seen: Option<(SystemTime, u64)>,
    /// When the port last opened.
    opened: std::time::Instant,
}

struct Inner {
    state: Mutex<State>,
    addr: SocketAddr,
    tls: Option<tokio_rustls::TlsAcceptor>,
    accept: Mutex<Option<tokio::task::JoinHandle<()>>>,
    watcher: Mutex<Option<tokio::task::JoinHandle<()>>>,
    config: Option<(PathBuf, Judge)>,
    start_delay: Duration,
    rt: tokio::runtime::Handle,
}

/// How to start a [`Standin`].
pub struct StandinBuilder {
    models: Vec<String>,
    api_key: Option<String>,
    tls: bool,
    config: Option<(PathBuf, Judge)>,
    watch: Option<Duration>,
    start_delay: Duration,
    logs: bool,
}

impl StandinBuilder {
    /// Serve these models (replaced by the config file's, when one is given).
    pub fn new(models: Vec<String>) -> StandinBuilder {
        StandinBuilder {
            models,
            api_key: None,
            tls: false,
            config: None,
            watch: None,
            start_delay: Duration::ZERO,
            logs: true,
        }
    }

    /// Require this API key (llama-swap's `apiKeys`).
    pub fn api_key(mut self, key: &str) -> Self {
        self.api_key = Some(key.to_string());
        self
    }

    /// Serve https with a fresh self-signed certificate.
    pub fn tls(mut self) -> Self {
        self.tls = true;
        self
    }

    /// Follow this config file, judged by `judge`.
    pub fn config(mut self, path: impl Into<PathBuf>, judge: Judge) -> Self {
        self.config = Some((path.into(), judge));
        self
    }

    /// `-watch-config`: poll the file's mtime and size every `interval`.
    pub fn watch(mut self, interval: Duration) -> Self {
        self.watch = Some(interval);
        self
    }

    /// A restart opens the port this long after it returns.
    pub fn start_delay(mut self, delay: Duration) -> Self {
        self.start_delay = delay;
        self
    }

    /// `false`: `/logs` answers 404 (a server, or a proxy in front of it,
    /// without the log endpoint).
    pub fn logs(mut self, enabled: bool) -> Self {
        self.logs = enabled;
        self
    }

    /// Bind 127.0.0.1:0 and serve. Fails when the config file is refused
    /// (as the real server exits 1).
    pub async fn start(self) -> std::io::Result<Standin> {
        let other = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
        let (tls, cert_pem) = if self.tls {
            let ck =
                rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
                    .map_err(|e| other(&e))?;
            let cert_pem = ck.cert.pem();
            let key =
                rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let config = rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| other(&e))?
                .with_no_client_auth()
                .with_single_cert(vec![ck.cert.der().clone()], key)
                .map_err(|e| other(&e))?;
            (
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(config))),
                Some(cert_pem),
            )
        } else {
            (None, None)
        };
        let mut models = self.models;
        let mut seen = None;
        if let Some((path, judge)) = &self.config {
            let bytes = std::fs::read(path)?;
            seen = stat(path);
            models = judge(&bytes).map_err(|why| {
                other(&format!(
                    "failed to create server error=\"{}\"",
                    why.replace('"', "\\\"")
                ))
            })?;
        }
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                models,
                running: Vec::new(),
                status: 200,
                api_key: self.api_key,
                requests: 0,
                log: String::new(),
                logs_enabled: self.logs,
                up: true,
                start_error: None,
                reloads: 0,
                restarts: 0,
                generation: 0,
                seen,
                opened: std::time::Instant::now(),
            }),
            addr,
            tls,
            accept: Mutex::new(None),
            watcher: Mutex::new(None),
            config: self.config,
            start_delay: self.start_delay,
            rt: tokio::runtime::Handle::current(),
        });
        serve(&inner, listener);
        if let (Some(interval), Some(_)) = (self.watch, &inner.config) {
            let weak = Arc::downgrade(&inner);
            let task = tokio::spawn(async move {
                loop {
                    tokio::time::sleep(interval).await;
                    let Some(inner) = weak.upgrade() else { return };
                    watch_tick(&inner);
                }
            });
            *lock(&inner.watcher) = Some(task);
        }
        Ok(Standin { inner, cert_pem })
    }
}

/// A running stand-in; stops when dropped.
pub struct Standin {
    inner: Arc<Inner>,
    /// PEM of the self-signed certificate when serving https.
    cert_pem: Option<String>,
}

fn lock<T>(s: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

fn stat(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

/// Accept connections on `listener` (the port is open while this runs).
fn serve(inner: &Arc<Inner>, listener: tokio::net::TcpListener) {
    let weak = Arc::downgrade(inner);
    let tls = inner.tls.clone();
    let task = inner.rt.spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let Some(inner) = weak.upgrade() else { return };
            let tls = tls.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let inner = inner.clone();
                    async move { Ok::<_, std::convert::Infallible>(answer(&inner, &req)) }
                });
                let http = hyper::server::conn::http1::Builder::new();
                match tls {
                    None => {
                        let _ = http.serve_connection(TokioIo::new(stream), svc).await;
                    }
                    Some(acceptor) => {
                        if let Ok(s) = acceptor.accept(stream).await {
                            let _ = http.serve_connection(TokioIo::new(s), svc).await;
                        }
                    }
                }
            });
        }
    });
    if let Some(old) = lock(&inner.accept).replace(task) {
        old.abort();
    }
}

fn watch_tick(inner: &Arc<Inner>) {
    let Some((path, _)) = &inner.config else {
        return;
    };
    let now = stat(path);
    let changed = {
        let mut s = lock(&inner.state);
        if !s.up || now.is_none() || now == s.seen {
            false
        } else {
            s.seen = now;
            true
        }
    };
    if changed {
        reload_now(inner, false);
    }
}

/// llama-swap's reload: the log lines, the new models or the old ones kept.
fn reload_now(inner: &Arc<Inner>, sighup: bool) {
    let Some((path, judge)) = &inner.config else {
        return;
    };
    {
        let mut s = lock(&inner.state);
        if !s.up {
            return;
        }
        if sighup {
            s.log.push_str("[INFO] received SIGHUP, reloading config\n");
        }
        s.log.push_str("[INFO] reloading configuration\n");
    }
    let verdict = std::fs::read(path)
        .map_err(|e| format!("open {}: {e}", path.display()))
        .and_then(|b| judge(&b));
    let mut s = lock(&inner.state);
    s.reloads += 1;
    s.seen = stat(path);
    match verdict {
        Ok(models) => {
            s.models = models;
            s.running.clear();
            s.log.push_str("[INFO] configuration reloaded\n");
        }
        Err(why) if why.starts_with("creating group router") => {
            s.log.push_str(&format!(
                "[WARN] failed to build new server during reload: {why}\n"
            ));
        }
        Err(why) => s
            .log
            .push_str(&format!("[WARN] failed to reload config: {why}\n")),
    }
}

/// Stop (port closed now), then start after the start delay with the
/// file's config, or stay down if it is refused.
fn restart_now(inner: &Arc<Inner>) {
    let generation = {
        let mut s = lock(&inner.state);
        s.up = false;
        s.restarts += 1;
        s.generation += 1;
        s.start_error = None;
        s.generation
    };
    if let Some(task) = lock(&inner.accept).take() {
        task.abort();
    }
    let weak = Arc::downgrade(inner);
    let delay = inner.start_delay;
    inner.rt.spawn(async move {
        tokio::time::sleep(delay).await;
        let Some(inner) = weak.upgrade() else { return };
        if lock(&inner.state).generation != generation {
            return;
        }
        let verdict = match &inner.config {
            None => Ok(None),
            Some((path, judge)) => std::fs::read(path)
                .map_err(|e| format!("open {}: {e}", path.display()))
                .and_then(|b| judge(&b))
                .map(|m| Some((m, stat(path)))),
        };
        match verdict {
            Err(why) => {
                lock(&inner.state).start_error = Some(why);
            }
            Ok(models) => {
                let listener = match tokio::net::TcpListener::bind(inner.addr).await {
                    Ok(l) => l,
                    Err(e) => {
                        lock(&inner.state).start_error = Some(format!("listen: {e}"));
                        return;
                    }
                };
                {
                    let mut s = lock(&inner.state);
                    if let Some((m, seen)) = models {
                        s.models = m;
                        s.seen = seen;
                    }
                    s.running.clear();
                    s.log.clear();
                    s.up = true;
                    s.opened = std::time::Instant::now();
                }
                serve(&inner, listener);
            }
        }
    });
}

impl Standin {
    /// Start on 127.0.0.1:0 listing `models`, requiring `api_key` if given.
    pub async fn start(models: Vec<String>, api_key: Option<String>) -> std::io::Result<Standin> {
        let mut b = StandinBuilder::new(models);
        b.api_key = api_key;
        b.start().await
    }

    /// The same over https, with a fresh self-signed certificate for
    /// `127.0.0.1` and `localhost` ([`Standin::cert_pem`]).
    pub async fn start_tls(
        models: Vec<String>,
        api_key: Option<String>,
    ) -> std::io::Result<Standin> {
        let mut b = StandinBuilder::new(models).tls();
        b.api_key = api_key;
        b.start().await
    }

    /// PEM of the https stand-in's certificate.
    pub fn cert_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    pub fn base_url(&self) -> String {
        let scheme = if self.cert_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.inner.addr)
    }

    pub fn set_models(&self, models: Vec<String>) {
        lock(&self.inner.state).models = models;
    }

    /// Models `/running` lists.
    pub fn set_running(&self, models: Vec<String>) {
        lock(&self.inner.state).running = models;
    }

    /// Answer the model list and `/health` with this status (e.g. 503).
    pub fn set_status(&self, status: u16) {
        lock(&self.inner.state).status = status;
    }

    pub fn request_count(&self) -> usize {
        lock(&self.inner.state).requests
    }

    /// Append a line to the log (as llama-swap's other messages would).
    pub fn log_line(&self, line: &str) {
        let mut s = lock(&self.inner.state);
        s.log.push_str(line);
        s.log.push('\n');
    }

    /// The `/logs` history as it is now.
    pub fn log_text(&self) -> String {
        lock(&self.inner.state).log.clone()
    }

    /// Reloads done (watch or SIGHUP), failed ones included.
    pub fn reload_count(&self) -> usize {
        lock(&self.inner.state).reloads
    }

    pub fn restart_count(&self) -> usize {
        lock(&self.inner.state).restarts
    }

    /// Whether the port is open.
    pub fn is_up(&self) -> bool {
        lock(&self.inner.state).up
    }

    /// When the port last opened (at start, or after a restart).
    pub fn opened_at(&self) -> std::time::Instant {
        lock(&self.inner.state).opened
    }

    /// Why the last restart did not start (the port stays closed).
    pub fn start_error(&self) -> Option<String> {
        lock(&self.inner.state).start_error.clone()
    }

    /// SIGHUP: reload the config file now.
    pub fn reload(&self) {
        reload_now(&self.inner, true);
    }

    /// Restart: port closed now, open again after the start delay (or
    /// never, when the config is refused).
    pub fn restart(&self) {
        restart_now(&self.inner);
    }

    /// [`Standin::restart`] as a closure (for a scripted exec command).
    pub fn restart_hook(&self) -> Hook {
        let weak = Arc::downgrade(&self.inner);
        Arc::new(move || {
            if let Some(inner) = weak.upgrade() {
                restart_now(&inner);
            }
        })
    }

    /// [`Standin::reload`] as a closure (a command sending SIGHUP).
    pub fn reload_hook(&self) -> Hook {
        let weak = Arc::downgrade(&self.inner);
        Arc::new(move || {
            if let Some(inner) = weak.upgrade() {
                reload_now(&inner, true);
            }
        })
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        if let Some(t) = lock(&self.inner.accept).take() {
            t.abort();
        }
        if let Some(t) = lock(&self.inner.watcher).take() {
            t.abort();
        }
    }
}

fn answer(inner: &Inner, req: &Request<hyper::body::Incoming>) -> Response<Full<bytes::Bytes>> {
    let mut s = lock(&inner.state);
    s.requests += 1;
    let reply = |code: u16, body: String| {
        let mut r = Response::new(Full::new(bytes::Bytes::from(body)));
        *r.status_mut() =
            hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        r
    };
    let path = req.uri().path();
    if path == "/health" {
        if s.status != 200 {
            return reply(s.status, "loading".into());
        }
        return reply(200, "OK".into());
    }
    if let Some(key) = &s.api_key {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        let bearer = header("authorization").and_then(|v| v.strip_prefix("Bearer "));
        if bearer != Some(key.as_str()) && header("x-api-key") != Some(key.as_str()) {
            let mut r = reply(
                401,
                r#"{"error":"unauthorized: invalid or missing API key"}"#.into(),
            );
            r.headers_mut().insert(
                hyper::header::WWW_AUTHENTICATE,
                hyper::header::HeaderValue::from_static("Basic realm=\"llama-swap\""),
            );
            return r;
        }
    }
    match path {
        "/v1/models" | "/models" => {
            if s.status != 200 {
                return reply(s.status, r#"{"error":"loading"}"#.into());
            }
            let data: Vec<serde_json::Value> = s
                .models
                .iter()
                .map(|m| serde_json::json!({"id": m, "object": "model", "owned_by": "llama-swap"}))
                .collect();
            reply(
                200,
                serde_json::json!({"object": "list", "data": data}).to_string(),
            )
        }
        "/logs" | "/logs/stream" if s.logs_enabled => reply(200, s.log.clone()),
        "/running" => {
            let running: Vec<serde_json::Value> = s
                .running
                .iter()
                .map(|m| serde_json::json!({"model": m, "state": "ready"}))
                .collect();
            reply(200, serde_json::json!({ "running": running }).to_string())
        }
        "/api/version" => reply(
            200,
            serde_json::json!({"build_date": "unknown", "commit": "standin", "version": "standin"})
                .to_string(),
        ),
        _ => reply(404, "404 page not found".into()),
    }
}

//! Health check: polls `GET <base_url><path>` (default `/v1/models`) with
//! hyper until it answers 200 (and lists the expected models), with a short
//! backoff (first wait ~50 ms, doubling up to a cap) inside a total
//! deadline, each attempt under its own timeout. Also the other llama-swap
//! endpoints a config tool reads: `/logs` (see [`crate::reload`]),
//! `/api/version`, `/running`.
//!
//! Owns: the HTTP/1 client (http, and https through rustls with the system's
//! roots plus an optional CA file), bounded reading of every body, the
//! OpenAI-style model list, and what a failed attempt saw ([`Seen`]).
//! Invariant: the API key is sent only as an `Authorization: Bearer` header
//! and never appears in errors or `Debug`. Host-sent text in errors is kept
//! exact (the binary escapes it for terminals).

use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_util::rt::TokioIo;

/// Largest model list, version or running-models body read.
pub(crate) const MAX_BODY: usize = 1024 * 1024;

/// Bytes of an unexpected body quoted in an error.
const BODY_QUOTE: usize = 200;

/// What to poll and how.
#[derive(Clone)]
pub struct HealthCheck {
    pub base_url: String,
    pub path: String,
    pub api_key: Option<String>,
    /// At most this many attempts (`None`: as many as the deadline allows).
    pub max_attempts: Option<u32>,
    /// The first wait; each later one doubles, up to `max_delay`.
    pub first_delay: Duration,
    pub max_delay: Duration,
    /// Every attempt and wait together.
    pub total_timeout: Duration,
    pub attempt_timeout: Duration,
    /// When set, every id must be listed.
    pub expect_models: Option<Vec<String>>,
    /// Extra trusted CA certificates (PEM) for an https base URL, besides
    /// the system's.
    pub ca_pem: Option<Vec<u8>>,
}

impl std::fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthCheck")
            .field("base_url", &self.base_url)
            .field("path", &self.path)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("max_attempts", &self.max_attempts)
            .field("total_timeout", &self.total_timeout)
            .finish()
    }
}

/// A successful check.
#[derive(Debug, Clone)]
pub struct HealthReport {
    pub attempts_used: u32,
    pub listed_models: Vec<String>,
    pub elapsed: Duration,
}

/// What one attempt saw, when it was not a healthy answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Seen {
    /// No attempt was made (no time left).
    Nothing,
    /// The TCP connection failed (refused, unreachable, name not found).
    Connect { why: String },
    /// No answer within the attempt's timeout.
    Timeout { after: Duration },
    /// TLS handshake or HTTP exchange failed.
    Exchange { why: String },
    /// An answer other than 200, with the first bytes of its body.
    Status { status: u16, body: String },
    /// The body could not be read (too large, cut).
    Body { why: String },
    /// 200, but not an OpenAI model list; the first bytes of the body.
    NotModelList { why: String, body: String },
    /// 200 with a model list that lacks these ids.
    Missing { missing: Vec<String> },
}

impl std::fmt::Display for Seen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Seen::Nothing => write!(f, "no attempt made"),
            Seen::Connect { why } => write!(f, "cannot connect: {why}"),
            Seen::Timeout { after } => write!(f, "no answer within {after:?}"),
            Seen::Exchange { why } => write!(f, "{why}"),
            Seen::Status { status, body } if body.is_empty() => {
                write!(f, "HTTP {status} (empty body)")
            }
            Seen::Status { status, body } => write!(f, "HTTP {status}: {body:?}"),
            Seen::Body { why } => write!(f, "reading the body: {why}"),
            Seen::NotModelList { why, body } => {
                write!(f, "HTTP 200 but not a model list ({why}): {body:?}")
            }
            Seen::Missing { missing } => write!(f, "the model list lacks {missing:?}"),
        }
    }
}

/// Why the endpoint is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("bad base URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("{url}: the TLS certificate was not accepted: {why}")]
    Tls { url: String, why: String },
    #[error("{url} answered {status}: {}", if *.key_sent { "the API key sent was rejected" } else { "llama-swap requires an API key" })]
    Unauthorized {
        url: String,
        status: u16,
        /// Whether a key was sent (rejected) or not (required).
        key_sent: bool,
    },
    #[error("{url} not healthy after {attempts} attempt(s) in {}ms: {last}", .elapsed.as_millis())]
    Unhealthy {
        url: String,
        attempts: u32,
        elapsed: Duration,
        last: Seen,
    },
    #[error("{url} is up but does not list {missing:?} (after {attempts} attempt(s)); llama-swap may still be running the old config")]
    MissingModels {
        url: String,
        attempts: u32,
        missing: Vec<String>,
    },
    /// llama-swap's log says it refused the config (and kept the one it had).
    #[error("llama-swap refused the config and keeps serving the one it had: {reason}")]
    ReloadRefused { url: String, reason: String },
    /// No reload appeared in llama-swap's log after the write.
    #[error("llama-swap did not reload within {}ms: {}", .waited.as_millis(), if *.started { format!("{url}/logs shows `reloading configuration` after the write but no outcome") } else { format!("no `reloading configuration` in {url}/logs after the write (is it running with -watch-config, or did the signal reach it?)") })]
    ReloadNotSeen {
        url: String,
        waited: Duration,
        /// A reload started but logged no outcome in time.
        started: bool,
    },
}

/// Something about the service worth telling that did not stop the apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ServiceWarning {
    /// The check before the write did not find llama-swap healthy.
    PreflightUnhealthy { url: String, seen: Seen },
    /// The reload could not be read from `/logs`; only the model list was
    /// compared (a change to `cmd` or groups is invisible there).
    ReloadUnproven { why: String },
    /// After the rollback llama-swap asks for an API key: it answers, but
    /// its health was not verified.
    RollbackUnverified { url: String },
    /// After the rollback llama-swap is not healthy, as it was not before
    /// the change either: the previous state is back, not a new failure.
    UnhealthyAsBefore { error: String },
}

/// An HTTP client for one llama-swap: base URL, key, TLS, timeout.
#[derive(Clone)]
pub struct Client {
    base: String,
    api_key: Option<String>,
    tls: Option<Arc<rustls::ClientConfig>>,
    pub attempt_timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("base", &self.base).finish()
    }
}

/// One GET's result.
pub(crate) enum Got {
    Answer { status: u16, body: bytes::Bytes },
    Failed(Seen),
    Fatal(HealthError),
}

impl Client {
    /// The client for `hc`'s base URL (TLS roots loaded once).
    pub fn new(hc: &HealthCheck) -> Result<Client, HealthError> {
        let base = hc.base_url.trim_end_matches('/').to_string();
        let uri: Uri =
            base.parse()
                .map_err(|e: hyper::http::uri::InvalidUri| HealthError::BadUrl {
                    url: base.clone(),
                    why: e.to_string(),
                })?;
        let tls = match uri.scheme_str() {
            Some("http") => None,
            Some("https") => Some(tls_config(hc).map_err(|why| HealthError::BadUrl {
                url: base.clone(),
                why,
            })?),
            _ => {
                return Err(HealthError::BadUrl {
                    url: base,
                    why: "expected http:// or https://".into(),
                })
            }
        };
        Ok(Client {
            base,
            api_key: hc.api_key.clone(),
            tls,
            attempt_timeout: hc.attempt_timeout,
        })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// `base + path`.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// One GET of `path` within `timeout`, the body bounded by `limit`.
    pub(crate) async fn get(&self, path: &str, limit: usize, timeout: Duration) -> Got {
        let url = self.url(path);
        let uri: Uri = match url.parse() {
            Ok(u) => u,
            Err(e) => {
                return Got::Fatal(HealthError::BadUrl {
                    url,
                    why: format!("{e}"),
                })
            }
        };
        match tokio::time::timeout(timeout, self.attempt(&uri, limit)).await {
            Ok(g) => g,
            Err(_) => Got::Failed(Seen::Timeout { after: timeout }),
        }
    }

    /// GET `path` and require 200; 401/403 are [`HealthError::Unauthorized`].
    pub(crate) async fn get_ok(
        &self,
        path: &str,
        limit: usize,
        timeout: Duration,
    ) -> Result<Result<bytes::Bytes, Seen>, HealthError> {
        match self.get(path, limit, timeout).await {
            Got::Fatal(e) => Err(e),
            Got::Failed(s) => Ok(Err(s)),
            Got::Answer { status, body } => match status {
                200 => Ok(Ok(body)),
                401 | 403 => Err(HealthError::Unauthorized {
                    url: self.url(path),
                    status,
                    key_sent: self.api_key.is_some(),
                }),
                _ => Ok(Err(Seen::Status {
                    status,
                    body: quote(&body),
                })),
            },
        }
    }

    async fn attempt(&self, uri: &Uri, limit: usize) -> Got {
        let host = uri
            .host()
            .unwrap_or("localhost")
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = uri
            .port_u16()
            .unwrap_or(if self.tls.is_some() { 443 } else { 80 });
        let stream = match tokio::net::TcpStream::connect((host.as_str(), port)).await {
            Ok(s) => s,
            Err(e) => return Got::Failed(Seen::Connect { why: e.to_string() }),
        };
        let _ = stream.set_nodelay(true);
        let Some(tls) = &self.tls else {
            return self.request(TokioIo::new(stream), uri, limit).await;
        };
        let name = match rustls::pki_types::ServerName::try_from(host.clone()) {
            Ok(n) => n,
            Err(e) => {
                return Got::Fatal(HealthError::BadUrl {
                    url: uri.to_string(),
                    why: format!("{host:?} is not a TLS server name: {e}"),
                })
            }
        };
        match tokio_rustls::TlsConnector::from(tls.clone())
            .connect(name, stream)
            .await
        {
            Ok(s) => self.request(TokioIo::new(s), uri, limit).await,
            // A certificate that does not verify will not start verifying.
            Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Got::Fatal(HealthError::Tls {
                url: uri.to_string(),
                why: e.to_string(),
            }),
            Err(e) => Got::Failed(Seen::Exchange {
                why: format!("TLS handshake: {e}"),
            }),
        }
    }

    /// One GET over an established connection (plain or TLS).
    async fn request<S>(&self, io: TokioIo<S>, uri: &Uri, limit: usize) -> Got
    where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
            Ok(x) => x,
            Err(e) => {
                return Got::Failed(Seen::Exchange {
                    why: format!("HTTP handshake: {e}"),
                })
            }
        };
        let driver = tokio::spawn(conn);
        let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let authority = uri.authority().map(|a| a.as_str()).unwrap_or("localhost");
        let mut req = hyper::Request::get(path).header(hyper::header::HOST, authority);
        if let Some(key) = &self.api_key {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
        }
        let req = match req.body(Empty::<bytes::Bytes>::new()) {
            Ok(r) => r,
            Err(e) => {
                driver.abort();
                return Got::Fatal(HealthError::BadUrl {
                    url: uri.to_string(),
                    why: e.to_string(),
                });
            }
        };
        let resp = match sender.send_request(req).await {
            Ok(r) => r,
            Err(e) => {
                driver.abort();
                return Got::Failed(Seen::Exchange {
                    why: format!("request failed: {e}"),
                });
            }
        };
        let status = resp.status().as_u16();
        let body = Limited::new(resp.into_body(), limit).collect().await;
        driver.abort();
        match body {
            Ok(b) => Got::Answer {
                status,
                body: b.to_bytes(),
            },
            Err(e) => Got::Failed(Seen::Body {
                why: format!("{e} (limit {limit} bytes)"),
            }),
        }
    }
}

/// The first bytes of a body, as text (invalid UTF-8 replaced).
fn quote(body: &[u8]) -> String {
    let cut = &body[..body.len().min(BODY_QUOTE)];
    let mut s = String::from_utf8_lossy(cut).into_owned();
    if body.len() > BODY_QUOTE {
        s.push('…');
    }
    s
}

/// The ids of an OpenAI-style `{"data":[{"id":…}]}` list.
fn model_ids(body: &[u8]) -> Result<Vec<String>, String> {
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    let data = v
        .get("data")
        .and_then(|d| d.as_array())
        .ok_or("no \"data\" array")?;
    Ok(data
        .iter()
        .filter_map(|m| m.get("id").and_then(|i| i.as_str()).map(String::from))
        .collect())
}

/// Poll until healthy, out of attempts or past the total deadline. The
/// first probe runs at once; `progress(n)` is called before attempt `n`.
pub async fn check(
    hc: &HealthCheck,
    progress: &mut dyn FnMut(u32),
) -> Result<HealthReport, HealthError> {
    poll(hc, Duration::ZERO, progress).await
}

/// [`check`], after waiting `first_wait` (a restart usually returns before
/// llama-swap listens). Waits then run `first_delay`, doubling, up to
/// `max_delay`.
pub async fn poll(
    hc: &HealthCheck,
    first_wait: Duration,
    progress: &mut dyn FnMut(u32),
) -> Result<HealthReport, HealthError> {
    let started = Instant::now();
    let client = Client::new(hc)?;
    let url = client.url(&hc.path);
    let deadline = started + hc.total_timeout;
    let max_attempts = hc.max_attempts.unwrap_or(u32::MAX).max(1);
    let max_delay = hc.max_delay.max(Duration::from_millis(1));
    let mut wait = first_wait;
    // The wait after the first attempt; each later one doubles.
    let mut delay = if first_wait.is_zero() {
        hc.first_delay
    } else {
        first_wait * 2
    }
    .max(Duration::from_millis(1));
    let mut last = Seen::Nothing;
    let mut n = 0;
    loop {
        if !wait.is_zero() {
            if n > 0 && Instant::now() + wait > deadline {
                break;
            }
            tokio::time::sleep(wait).await;
        }
        n += 1;
        progress(n);
        let left = deadline.saturating_duration_since(Instant::now());
        let timeout = hc.attempt_timeout.min(left).max(Duration::from_millis(10));
        let mut got = client.get_ok(&hc.path, MAX_BODY, timeout).await?;
        // A health path that is not the model list (`/health`): the models
        // are read from /v1/models once it answers.
        let list_path = matches!(hc.path.as_str(), "/v1/models" | "/models");
        if let (Ok(_), Some(_), false) = (&got, &hc.expect_models, list_path) {
            let left = deadline.saturating_duration_since(Instant::now());
            let timeout = hc.attempt_timeout.min(left).max(Duration::from_millis(10));
            got = client.get_ok("/v1/models", MAX_BODY, timeout).await?;
        }
        match got {
            Err(seen) => last = seen,
            Ok(body) => match (model_ids(&body), &hc.expect_models) {
                (Err(why), Some(_)) => {
                    last = Seen::NotModelList {
                        why,
                        body: quote(&body),
                    }
                }
                (listed, expect) => {
                    let listed = listed.unwrap_or_default();
                    let missing: Vec<String> = expect
                        .iter()
                        .flatten()
                        .filter(|m| !listed.contains(m))
                        .cloned()
                        .collect();
                    if missing.is_empty() {
                        return Ok(HealthReport {
                            attempts_used: n,
                            listed_models: listed,
                            elapsed: started.elapsed(),
                        });
                    }
                    last = Seen::Missing { missing };
                }
            },
        }
        if n >= max_attempts || Instant::now() >= deadline {
            break;
        }
        wait = delay.min(max_delay);
        delay = (delay * 2).min(max_delay);
    }
    Err(match last {
        Seen::Missing { missing } => HealthError::MissingModels {
            url,
            attempts: n,
            missing,
        },
        last => HealthError::Unhealthy {
            url,
            attempts: n,
            elapsed: started.elapsed(),
            last,
        },
    })
}

impl Client {
    /// `GET /api/version`: llama-swap's `version` (and commit), if it says.
    pub async fn version(&self) -> Result<Result<String, Seen>, HealthError> {
        Ok(self.get_json("/api/version").await?.map(|v| {
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("?");
            format!("{} (commit {})", field("version"), field("commit"))
        }))
    }

    /// `GET path` answered 200 with a JSON body (bounded by `MAX_BODY`).
    async fn get_json(&self, path: &str) -> Result<Result<serde_json::Value, Seen>, HealthError> {
        Ok(self
            .get_ok(path, MAX_BODY, self.attempt_timeout)
            .await?
            .and_then(|body| {
                serde_json::from_slice(&body).map_err(|e| Seen::NotModelList {
                    why: e.to_string(),
                    body: quote(&body),
                })
            }))
    }

    /// `GET /running`: the models running now.
    pub async fn running(&self) -> Result<Result<Vec<String>, Seen>, HealthError> {
        Ok(self.get_json("/running").await?.map(|v| {
            v.get("running")
                .and_then(|r| r.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m.get("model").and_then(|i| i.as_str()).map(String::from))
                        .collect()
                })
                .unwrap_or_default()
        }))
    }
}

/// The TLS client: the system's roots (rustls-native-certs) plus the PEM
/// certificates in `hc.ca_pem`.
fn tls_config(hc: &HealthCheck) -> Result<Arc<rustls::ClientConfig>, String> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::CertificateDer;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    if let Some(pem) = &hc.ca_pem {
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert = cert.map_err(|e| format!("the CA certificate file: {e}"))?;
            roots
                .add(cert)
                .map_err(|e| format!("the CA certificate file: {e}"))?;
            n += 1;
        }
        if n == 0 {
            return Err("the CA certificate file holds no PEM certificate".into());
        }
    }
    if roots.is_empty() {
        return Err(
            "no trusted CA certificates: this system has none; pass a CA certificate file".into(),
        );
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_are_bounded_and_lossy() {
        assert_eq!(quote(b"loading"), "loading");
        let long = vec![b'x'; 500];
        let q = quote(&long);
        assert_eq!(q.chars().filter(|c| *c == 'x').count(), BODY_QUOTE);
        assert!(q.ends_with('…'));
        assert_eq!(quote(b"\xff\x1b[2J"), "\u{fffd}\x1b[2J");
    }

    fn hc(base: String) -> HealthCheck {
        HealthCheck {
            base_url: base,
            path: "/v1/models".into(),
            api_key: None,
            max_attempts: None,
            first_delay: Duration::from_millis(20),
            max_delay: Duration::from_millis(40),
            total_timeout: Duration::from_millis(300),
            attempt_timeout: Duration::from_millis(100),
            expect_models: None,
            ca_pem: None,
        }
    }

    #[tokio::test]
    async fn failures_say_what_they_saw_within_the_total_deadline() {
        // A port nobody listens on: connection refused.
        let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", closed.local_addr().expect("addr"));
        drop(closed);
        let t = Instant::now();
        let mut n = 0;
        let e = check(&hc(url), &mut |_| n += 1).await.expect_err("down");
        assert!(
            t.elapsed() < Duration::from_millis(600),
            "{:?}",
            t.elapsed()
        );
        assert!(n >= 4, "attempts at 0, 20, 60, 100… ms: {n}");
        match e {
            HealthError::Unhealthy {
                last: Seen::Connect { .. },
                attempts,
                ..
            } => {
                assert_eq!(attempts, n)
            }
            other => panic!("{other:?}"),
        }
        // A server that accepts and never answers: a timeout per attempt.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", silent.local_addr().expect("addr"));
        let hold = tokio::spawn(async move {
            let mut kept = Vec::new();
            while let Ok((s, _)) = silent.accept().await {
                kept.push(s);
            }
        });
        let mut one = hc(url);
        one.max_attempts = Some(1);
        match check(&one, &mut |_| {}).await {
            Err(HealthError::Unhealthy {
                last: Seen::Timeout { after },
                attempts: 1,
                ..
            }) => assert_eq!(after, Duration::from_millis(100)),
            other => panic!("{other:?}"),
        }
        hold.abort();
    }

    #[test]
    fn model_ids_need_a_data_array() {
        assert_eq!(
            model_ids(br#"{"data":[{"id":"a"},{"id":"b"},{"x":1}]}"#),
            Ok(vec!["a".to_string(), "b".to_string()])
        );
        assert!(model_ids(b"OK").is_err());
        assert!(model_ids(br#"{"object":"list"}"#).is_err());
    }
}

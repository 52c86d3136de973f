//! Health check: polls `GET <base_url><path>` (default `/v1/models`) with
//! hyper until it answers 200, with attempts, a delay between them and a
//! per-attempt timeout.
//!
//! Owns: the HTTP/1 client (plain http; https is refused with advice), the
//! bounded reading and parsing of the OpenAI-style model list, and the
//! model-list comparison. Invariant: the API key is sent only as an
//! `Authorization: Bearer` header and never appears in errors or `Debug`.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty, Limited};
use hyper::Uri;
use hyper_util::rt::TokioIo;

/// Largest response body read.
const MAX_BODY: usize = 1024 * 1024;

/// What to poll and how.
#[derive(Clone)]
pub struct HealthCheck {
    pub base_url: String,
    pub path: String,
    pub api_key: Option<String>,
    pub attempts: u32,
    pub delay: Duration,
    pub attempt_timeout: Duration,
    /// When set, every id must be listed.
    pub expect_models: Option<Vec<String>>,
}

impl std::fmt::Debug for HealthCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HealthCheck")
            .field("base_url", &self.base_url)
            .field("path", &self.path)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("attempts", &self.attempts)
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

/// Why the endpoint is not healthy.
#[derive(Debug, thiserror::Error)]
pub enum HealthError {
    #[error("bad base URL {url:?}: {why}")]
    BadUrl { url: String, why: String },
    #[error("{url} answered {status}: {}", if *.key_sent { "the API key sent was rejected" } else { "llama-swap requires an API key" })]
    Unauthorized {
        url: String,
        status: u16,
        /// Whether a key was sent (rejected) or not (required).
        key_sent: bool,
    },
    #[error("{url} not healthy after {attempts} attempt(s): {last}")]
    Unhealthy {
        url: String,
        attempts: u32,
        last: String,
    },
    #[error("{url} is up but does not list {missing:?} (after {attempts} attempt(s)); llama-swap may still be running the old config")]
    MissingModels {
        url: String,
        attempts: u32,
        missing: Vec<String>,
    },
}

enum Attempt {
    Ok(Vec<String>),
    Retry(String),
    Fatal(HealthError),
}

/// Poll until healthy or out of attempts. `progress(n)` is called before
/// attempt `n`.
pub async fn check(
    hc: &HealthCheck,
    progress: &mut dyn FnMut(u32),
) -> Result<HealthReport, HealthError> {
    let started = Instant::now();
    let url = format!("{}{}", hc.base_url.trim_end_matches('/'), hc.path);
    let uri: Uri = url
        .parse()
        .map_err(|e: hyper::http::uri::InvalidUri| HealthError::BadUrl {
            url: url.clone(),
            why: e.to_string(),
        })?;
    match uri.scheme_str() {
        Some("http") => {}
        Some("https") => {
            return Err(HealthError::BadUrl {
                url,
                why: "https is not supported (swapcfg carries no TLS stack); use http on the LAN or an SSH-tunnelled port".into(),
            })
        }
        _ => return Err(HealthError::BadUrl { url, why: "expected http://host:port".into() }),
    }
    let attempts = hc.attempts.max(1);
    let mut last = String::from("no attempt made");
    for n in 1..=attempts {
        progress(n);
        let result = tokio::time::timeout(hc.attempt_timeout, attempt(&uri, hc)).await;
        match result {
            Err(_) => last = format!("no answer within {:?}", hc.attempt_timeout),
            Ok(Attempt::Fatal(e)) => return Err(e),
            Ok(Attempt::Retry(why)) => last = why,
            Ok(Attempt::Ok(listed)) => {
                let missing: Vec<String> = hc
                    .expect_models
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
                if n == attempts {
                    return Err(HealthError::MissingModels {
                        url,
                        attempts,
                        missing,
                    });
                }
                last = format!("missing models {missing:?}");
            }
        }
        if n < attempts {
            tokio::time::sleep(hc.delay).await;
        }
    }
    Err(HealthError::Unhealthy {
        url,
        attempts,
        last,
    })
}

async fn attempt(uri: &Uri, hc: &HealthCheck) -> Attempt {
    let host = uri
        .host()
        .unwrap_or("localhost")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = match tokio::net::TcpStream::connect((host.as_str(), port)).await {
        Ok(s) => s,
        Err(e) => return Attempt::Retry(format!("cannot connect: {e}")),
    };
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    {
        Ok(x) => x,
        Err(e) => return Attempt::Retry(format!("HTTP handshake: {e}")),
    };
    let driver = tokio::spawn(conn);
    let path = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or("localhost");
    let mut req = hyper::Request::get(path).header(hyper::header::HOST, authority);
    if let Some(key) = &hc.api_key {
        req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
    }
    let req = match req.body(Empty::<bytes::Bytes>::new()) {
        Ok(r) => r,
        Err(e) => {
            return Attempt::Fatal(HealthError::BadUrl {
                url: uri.to_string(),
                why: e.to_string(),
            })
        }
    };
    let resp = match sender.send_request(req).await {
        Ok(r) => r,
        Err(e) => {
            driver.abort();
            return Attempt::Retry(format!("request failed: {e}"));
        }
    };
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BODY).collect().await;
    driver.abort();
    if status == 401 || status == 403 {
        return Attempt::Fatal(HealthError::Unauthorized {
            url: uri.to_string(),
            status,
            key_sent: hc.api_key.is_some(),
        });
    }
    if status != 200 {
        return Attempt::Retry(format!("HTTP {status}"));
    }
    let bytes = match body {
        Ok(b) => b.to_bytes(),
        Err(e) => return Attempt::Retry(format!("reading the body (limit {MAX_BODY} bytes): {e}")),
    };
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(v) => Attempt::Ok(
            v.get("data")
                .and_then(|d| d.as_array())
                .map(|a| {
                    a.iter()
                        .filter_map(|m| m.get("id").and_then(|i| i.as_str()).map(String::from))
                        .collect()
                })
                .unwrap_or_default(),
        ),
        Err(_) if hc.expect_models.is_none() => Attempt::Ok(Vec::new()),
        Err(e) => Attempt::Retry(format!("not a model list: {e}")),
    }
}

//! Health check: polls `GET <base_url><path>` (default `/v1/models`) with
//! hyper until it answers 200, with attempts, a delay between them and a
//! per-attempt timeout.
//!
//! Owns: the HTTP/1 client (http, and https through rustls with the system's
//! roots plus an optional CA file), the
//! bounded reading and parsing of the OpenAI-style model list, and the
//! model-list comparison. Invariant: the API key is sent only as an
//! `Authorization: Bearer` header and never appears in errors or `Debug`.

use std::sync::Arc;
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
    #[error("{url}: the TLS certificate was not accepted: {why}")]
    Tls { url: String, why: String },
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
    let tls = match uri.scheme_str() {
        Some("http") => None,
        Some("https") => Some(tls_config(hc).map_err(|why| HealthError::BadUrl {
            url: url.clone(),
            why,
        })?),
        _ => {
            return Err(HealthError::BadUrl {
                url,
                why: "expected http:// or https://".into(),
            })
        }
    };
    let attempts = hc.attempts.max(1);
    let mut last = String::from("no attempt made");
    for n in 1..=attempts {
        progress(n);
        let result =
            tokio::time::timeout(hc.attempt_timeout, attempt(&uri, hc, tls.as_ref())).await;
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

async fn attempt(uri: &Uri, hc: &HealthCheck, tls: Option<&Arc<rustls::ClientConfig>>) -> Attempt {
    let host = uri
        .host()
        .unwrap_or("localhost")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let port = uri
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let stream = match tokio::net::TcpStream::connect((host.as_str(), port)).await {
        Ok(s) => s,
        Err(e) => return Attempt::Retry(format!("cannot connect: {e}")),
    };
    let Some(tls) = tls else {
        return request(TokioIo::new(stream), uri, hc).await;
    };
    let name = match rustls::pki_types::ServerName::try_from(host.clone()) {
        Ok(n) => n,
        Err(e) => {
            return Attempt::Fatal(HealthError::BadUrl {
                url: uri.to_string(),
                why: format!("{host:?} is not a TLS server name: {e}"),
            })
        }
    };
    match tokio_rustls::TlsConnector::from(tls.clone())
        .connect(name, stream)
        .await
    {
        Ok(s) => request(TokioIo::new(s), uri, hc).await,
        // A certificate that does not verify will not start verifying.
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => Attempt::Fatal(HealthError::Tls {
            url: uri.to_string(),
            why: e.to_string(),
        }),
        Err(e) => Attempt::Retry(format!("TLS handshake: {e}")),
    }
}

/// One GET over an established connection (plain or TLS).
async fn request<S>(io: TokioIo<S>, uri: &Uri, hc: &HealthCheck) -> Attempt
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = match hyper::client::conn::http1::handshake(io).await {
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

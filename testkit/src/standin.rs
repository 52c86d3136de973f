//! A stand-in llama-swap endpoint for tests and `swapcfg demo`: a tiny
//! hyper HTTP/1 server on loopback answering `GET /v1/models` with an
//! OpenAI-style list, optionally requiring an API key, with a settable
//! status to simulate a broken reload.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use http_body_util::Full;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;

struct State {
    models: Vec<String>,
    status: u16,
    api_key: Option<String>,
    requests: usize,
}

/// A running stand-in endpoint; stops when dropped.
pub struct Standin {
    addr: SocketAddr,
    /// PEM of the self-signed certificate when serving https.
    cert_pem: Option<String>,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

fn lock(s: &Mutex<State>) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

impl Standin {
    /// Start on 127.0.0.1:0 listing `models`, requiring `api_key` if given.
    pub async fn start(models: Vec<String>, api_key: Option<String>) -> std::io::Result<Standin> {
        Self::start_with(models, api_key, None).await
    }

    /// The same over https, with a fresh self-signed certificate for
    /// `127.0.0.1` and `localhost` ([`Standin::cert_pem`]).
    pub async fn start_tls(
        models: Vec<String>,
        api_key: Option<String>,
    ) -> std::io::Result<Standin> {
        let other = |e: &dyn std::fmt::Display| std::io::Error::other(e.to_string());
        let ck = rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()])
            .map_err(|e| other(&e))?;
        let cert_pem = ck.cert.pem();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(ck.signing_key.serialize_der().into());
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| other(&e))?
            .with_no_client_auth()
            .with_single_cert(vec![ck.cert.der().clone()], key)
            .map_err(|e| other(&e))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let mut s = Self::start_with(models, api_key, Some(acceptor)).await?;
        s.cert_pem = Some(cert_pem);
        Ok(s)
    }

    /// PEM of the https stand-in's certificate.
    pub fn cert_pem(&self) -> Option<&str> {
        self.cert_pem.as_deref()
    }

    async fn start_with(
        models: Vec<String>,
        api_key: Option<String>,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> std::io::Result<Standin> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = Arc::new(Mutex::new(State {
            models,
            status: 200,
            api_key,
            requests: 0,
        }));
        let st = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let st = st.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |req| {
                        let st = st.clone();
                        async move { Ok::<_, std::convert::Infallible>(answer(&st, &req)) }
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
        Ok(Standin {
            addr,
            cert_pem: None,
            state,
            task,
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn base_url(&self) -> String {
        let scheme = if self.cert_pem.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}", self.addr)
    }

    pub fn set_models(&self, models: Vec<String>) {
        lock(&self.state).models = models;
    }

    /// Answer every request with this status (e.g. 503 for a broken reload).
    pub fn set_status(&self, status: u16) {
        lock(&self.state).status = status;
    }

    pub fn request_count(&self) -> usize {
        lock(&self.state).requests
    }
}

impl Drop for Standin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn answer(st: &Mutex<State>, req: &Request<hyper::body::Incoming>) -> Response<Full<bytes::Bytes>> {
    let mut s = lock(st);
    s.requests += 1;
    let reply = |code: u16, body: String| {
        let mut r = Response::new(Full::new(bytes::Bytes::from(body)));
        *r.status_mut() =
            hyper::StatusCode::from_u16(code).unwrap_or(hyper::StatusCode::INTERNAL_SERVER_ERROR);
        r
    };
    if let Some(key) = &s.api_key {
        let sent = req
            .headers()
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        if sent != Some(format!("Bearer {key}").as_str()) {
            return reply(401, r#"{"error":"unauthorized"}"#.into());
        }
    }
    if req.uri().path() != "/v1/models" {
        return reply(404, "not found".into());
    }
    if s.status != 200 {
        return reply(s.status, r#"{"error":"loading"}"#.into());
    }
    let data: Vec<serde_json::Value> = s
        .models
        .iter()
        .map(|m| serde_json::json!({"id": m, "object": "model"}))
        .collect();
    reply(
        200,
        serde_json::json!({"object": "list", "data": data}).to_string(),
    )
}

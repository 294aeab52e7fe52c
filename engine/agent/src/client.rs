//! The HTTP(S) client of the node API: TLS set-up (ring provider, system roots
//! or one CA file), the two calls, bounded response reading, and what each
//! failure means for the agent ([`Disposition`]).

use std::path::Path;
use std::time::Duration;

use reqwest::{StatusCode, Url};
use serde::de::DeserializeOwned;

use crate::protocol::{
    ErrorBody, HEARTBEAT_PATH, HeartbeatRequest, HeartbeatResponse, REGISTER_PATH, RegisterRequest,
    RegisterResponse,
};

/// Responses larger than this are not from a control plane.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Installs rustls' ring provider as the process default, once. Reqwest is
/// built without a provider of its own (no aws-lc).
pub fn install_crypto_provider() {
    // Err means a provider is already installed, which is what we want.
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Why the HTTP client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsSetupError {
    #[error("reading CA file {}: {source}", path.display())]
    ReadCa {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("CA file {} holds no usable PEM certificate: {detail}", path.display())]
    BadCa {
        path: std::path::PathBuf,
        detail: String,
    },
    #[error("building the HTTP client: {0}")]
    Client(#[source] reqwest::Error),
}

/// A failed call to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    #[error("{url}: {}", describe_transport(.source))]
    Transport {
        url: Url,
        #[source]
        source: reqwest::Error,
    },
    #[error("{url}: HTTP {status} {code}: {message}")]
    Rejected {
        url: Url,
        status: StatusCode,
        code: String,
        message: String,
    },
    #[error("{url}: HTTP {status} with an unreadable body: {detail}")]
    BadResponse {
        url: Url,
        status: StatusCode,
        detail: String,
    },
}

/// What the agent does after a failed call.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Disposition {
    /// The control plane is unreachable or struggling: back off and retry.
    Retry,
    /// The control plane does not know this node (any more): register anew.
    Reregister,
    /// The request itself was refused; retrying the same one will not help.
    Refused,
}

impl CallError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            CallError::Transport { .. } => None,
            CallError::Rejected { status, .. } | CallError::BadResponse { status, .. } => {
                Some(*status)
            }
        }
    }

    /// For a registration: transient trouble and an undeclared region (the
    /// next GitOps sync may declare it) are retried; a bad join token or a bad
    /// request is refused.
    pub fn on_register(&self) -> Disposition {
        match self.status() {
            None => Disposition::Retry,
            Some(status) if is_transient(status) => Disposition::Retry,
            Some(StatusCode::NOT_FOUND) => Disposition::Retry,
            Some(status) if status.is_success() => Disposition::Retry,
            Some(_) => Disposition::Refused,
        }
    }

    /// For a heartbeat: transient trouble is retried; 401/403/404 mean the
    /// node is unknown or its token no longer valid; another 4xx refuses this
    /// heartbeat (the next one is sent at the normal interval).
    pub fn on_heartbeat(&self) -> Disposition {
        match self.status() {
            None => Disposition::Retry,
            Some(status) if is_transient(status) => Disposition::Retry,
            Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN | StatusCode::NOT_FOUND) => {
                Disposition::Reregister
            }
            Some(status) if status.is_success() => Disposition::Retry,
            Some(_) => Disposition::Refused,
        }
    }
}

fn is_transient(status: StatusCode) -> bool {
    status.is_server_error()
        || status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
}

/// The whole error chain, so a TLS failure names the certificate problem.
fn describe_transport(error: &reqwest::Error) -> String {
    neutral_core::error_text::with_causes(error)
}

/// The node API as the agent's loops call it: [`ControlPlane`] over HTTP in
/// production; an in-memory one in the pacing tests, which run on paused
/// time.
pub(crate) trait NodeApi {
    fn base(&self) -> &Url;

    async fn register(
        &self,
        join_token: &str,
        request: &RegisterRequest,
        timeout: Duration,
    ) -> Result<RegisterResponse, CallError>;

    async fn heartbeat(
        &self,
        node_token: &str,
        request: &HeartbeatRequest,
        timeout: Duration,
    ) -> Result<HeartbeatResponse, CallError>;
}

impl NodeApi for ControlPlane {
    fn base(&self) -> &Url {
        ControlPlane::base(self)
    }

    async fn register(
        &self,
        join_token: &str,
        request: &RegisterRequest,
        timeout: Duration,
    ) -> Result<RegisterResponse, CallError> {
        ControlPlane::register(self, join_token, request, timeout).await
    }

    async fn heartbeat(
        &self,
        node_token: &str,
        request: &HeartbeatRequest,
        timeout: Duration,
    ) -> Result<HeartbeatResponse, CallError> {
        ControlPlane::heartbeat(self, node_token, request, timeout).await
    }
}

/// One control plane replica's endpoints.
#[derive(Debug)]
struct Endpoints {
    base: Url,
    register_url: Url,
    heartbeat_url: Url,
}

impl Endpoints {
    fn at(base: &Url) -> Self {
        let base = directory_url(base);
        Endpoints {
            register_url: join(&base, REGISTER_PATH),
            heartbeat_url: join(&base, HEARTBEAT_PATH),
            base,
        }
    }
}

/// The node API of a control plane: one URL, or several replicas of it that
/// the agent moves between — a call that fails for lack of an answer (no
/// connection, a timeout, a 5xx, 429 or 408) sends the next call to the next
/// replica; the agent's backoff paces the retries as for one.
#[derive(Debug)]
pub struct ControlPlane {
    http: reqwest::Client,
    replicas: Vec<Endpoints>,
    current: std::sync::atomic::AtomicUsize,
}

/// The CA the agent trusts alone (`--ca-file`), read once for both its
/// HTTP client and its stream, so the two cannot trust different files.
#[derive(Clone, Debug)]
pub struct TrustedCa {
    pub path: std::path::PathBuf,
    pub pem: Vec<u8>,
}

impl TrustedCa {
    pub fn read(path: &Path) -> Result<TrustedCa, TlsSetupError> {
        let pem = std::fs::read(path).map_err(|source| TlsSetupError::ReadCa {
            path: path.to_owned(),
            source,
        })?;
        Ok(TrustedCa {
            path: path.to_owned(),
            pem,
        })
    }
}

impl ControlPlane {
    /// A client for the control plane at `base`, trusting only `ca` when
    /// given, else the system's roots.
    pub fn new(base: &Url, ca: Option<&TrustedCa>) -> Result<Self, TlsSetupError> {
        Self::with_replicas(base, &[], ca)
    }

    /// A client for the control plane at `base` that moves to the replicas
    /// in `others` (in turn) when the one it uses stops answering.
    pub fn with_replicas(
        base: &Url,
        others: &[Url],
        ca: Option<&TrustedCa>,
    ) -> Result<Self, TlsSetupError> {
        install_crypto_provider();
        let mut builder = reqwest::Client::builder()
            .connect_timeout(CONNECT_TIMEOUT)
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("neutral-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(TrustedCa { path, pem }) = ca {
            let certificates =
                reqwest::Certificate::from_pem_bundle(pem).map_err(|err| TlsSetupError::BadCa {
                    path: path.clone(),
                    detail: err.to_string(),
                })?;
            if certificates.is_empty() {
                return Err(TlsSetupError::BadCa {
                    path: path.clone(),
                    detail: "no CERTIFICATE block".to_owned(),
                });
            }
            builder = builder.tls_certs_only(certificates);
        }
        let http = builder.build().map_err(TlsSetupError::Client)?;
        let replicas = std::iter::once(base)
            .chain(others)
            .map(Endpoints::at)
            .collect();
        Ok(ControlPlane {
            http,
            replicas,
            current: std::sync::atomic::AtomicUsize::new(0),
        })
    }

    fn endpoints(&self) -> (usize, &Endpoints) {
        let index =
            self.current.load(std::sync::atomic::Ordering::Relaxed) % self.replicas.len().max(1);
        match self.replicas.get(index) {
            Some(endpoints) => (index, endpoints),
            // Never empty: `with_replicas` puts `base` first.
            None => (0, &self.replicas[0]),
        }
    }

    /// The replica the next call goes to.
    pub fn base(&self) -> &Url {
        &self.endpoints().1.base
    }

    /// After a call to replica `index` failed for lack of an answer, the
    /// next goes to the next replica (unless another call moved on already).
    fn move_on(&self, index: usize, error: &CallError) {
        if self.replicas.len() < 2 {
            return;
        }
        let unanswered = match error.status() {
            None => true,
            Some(status) => is_transient(status),
        };
        if !unanswered {
            return;
        }
        let next = (index + 1) % self.replicas.len();
        let moved = self.current.compare_exchange(
            index,
            next,
            std::sync::atomic::Ordering::Relaxed,
            std::sync::atomic::Ordering::Relaxed,
        );
        if moved.is_ok()
            && let Some(to) = self.replicas.get(next)
        {
            tracing::warn!(error = %error, next = %to.base, "control plane replica not answering; moving to the next");
        }
    }

    pub async fn register(
        &self,
        join_token: &str,
        request: &RegisterRequest,
        timeout: Duration,
    ) -> Result<RegisterResponse, CallError> {
        let (index, endpoints) = self.endpoints();
        let result = self
            .post(&endpoints.register_url, join_token, request, timeout)
            .await;
        if let Err(error) = &result {
            self.move_on(index, error);
        }
        result
    }

    pub async fn heartbeat(
        &self,
        node_token: &str,
        request: &HeartbeatRequest,
        timeout: Duration,
    ) -> Result<HeartbeatResponse, CallError> {
        let (index, endpoints) = self.endpoints();
        let result = self
            .post(&endpoints.heartbeat_url, node_token, request, timeout)
            .await;
        if let Err(error) = &result {
            self.move_on(index, error);
        }
        result
    }

    async fn post<B: serde::Serialize, R: DeserializeOwned>(
        &self,
        url: &Url,
        token: &str,
        body: &B,
        timeout: Duration,
    ) -> Result<R, CallError> {
        let transport = |source| CallError::Transport {
            url: url.clone(),
            source,
        };
        let mut response = self
            .http
            .post(url.clone())
            .bearer_auth(token)
            .json(body)
            .timeout(timeout)
            .send()
            .await
            .map_err(transport)?;
        let status = response.status();
        let mut bytes = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(transport)? {
            if bytes.len().saturating_add(chunk.len()) > MAX_RESPONSE_BYTES {
                return Err(CallError::BadResponse {
                    url: url.clone(),
                    status,
                    detail: format!("larger than {MAX_RESPONSE_BYTES} bytes"),
                });
            }
            bytes.extend_from_slice(&chunk);
        }
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|err| CallError::BadResponse {
                url: url.clone(),
                status,
                detail: err.to_string(),
            });
        }
        let body: ErrorBody = serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
            error: status.canonical_reason().unwrap_or("error").to_owned(),
            message: String::from_utf8_lossy(bytes.get(..200).unwrap_or(&bytes)).into_owned(),
        });
        Err(CallError::Rejected {
            url: url.clone(),
            status,
            code: body.error,
            message: body.message,
        })
    }
}

/// `base` with a trailing slash, so joining keeps any path prefix
/// (`https://cp/neutral` → `https://cp/neutral/nodes/register`).
fn directory_url(base: &Url) -> Url {
    let mut url = base.clone();
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.set_query(None);
    url.set_fragment(None);
    url
}

fn join(base: &Url, path: &str) -> Url {
    base.join(path).unwrap_or_else(|_| base.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rejected(status: u16) -> CallError {
        CallError::Rejected {
            url: "http://127.0.0.1/".parse().unwrap(),
            status: StatusCode::from_u16(status).unwrap(),
            code: "x".into(),
            message: "y".into(),
        }
    }

    #[test]
    fn registration_retries_transient_failures_and_unknown_regions_only() {
        for status in [500, 502, 503, 504, 429, 408, 404] {
            assert_eq!(
                rejected(status).on_register(),
                Disposition::Retry,
                "{status}"
            );
        }
        for status in [400, 401, 403, 409, 413, 415, 422] {
            assert_eq!(
                rejected(status).on_register(),
                Disposition::Refused,
                "{status}"
            );
        }
    }

    #[test]
    fn heartbeats_reregister_when_the_node_is_unknown() {
        for status in [401, 403, 404] {
            assert_eq!(
                rejected(status).on_heartbeat(),
                Disposition::Reregister,
                "{status}"
            );
        }
        for status in [500, 503, 429, 408] {
            assert_eq!(
                rejected(status).on_heartbeat(),
                Disposition::Retry,
                "{status}"
            );
        }
        for status in [400, 413, 422] {
            assert_eq!(
                rejected(status).on_heartbeat(),
                Disposition::Refused,
                "{status}"
            );
        }
    }

    #[test]
    fn endpoint_urls_keep_a_path_prefix() {
        let url: Url = "https://cp.example:7400/neutral?x=1".parse().unwrap();
        let base = directory_url(&url);
        assert_eq!(
            join(&base, REGISTER_PATH).as_str(),
            "https://cp.example:7400/neutral/nodes/register"
        );
        let root: Url = "http://127.0.0.1:7400".parse().unwrap();
        assert_eq!(
            join(&directory_url(&root), HEARTBEAT_PATH).as_str(),
            "http://127.0.0.1:7400/nodes/heartbeat"
        );
    }

    #[test]
    fn a_ca_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate\n").unwrap();
        let base: Url = "https://127.0.0.1:1/".parse().unwrap();
        let ca = TrustedCa::read(&path).unwrap();
        let err = ControlPlane::new(&base, Some(&ca)).unwrap_err();
        assert!(err.to_string().contains("ca.pem"), "{err}");
        let missing = dir.path().join("missing.pem");
        assert!(matches!(
            TrustedCa::read(&missing),
            Err(TlsSetupError::ReadCa { .. })
        ));
    }
}

//! Route53 for tests: moto's server (PyPI `moto[server]`, installed by
//! `scripts/setup` into `.build/moto/venv`, or found on PATH) on loopback,
//! and a proxy in front of it that counts Route53 calls and can refuse
//! writes with `Throttling` or `PriorRequestNotComplete`, as Route53 does
//! and moto cannot.
//!
//! moto accepts any SigV4 signature: the signing itself is checked against
//! AWS' published example in the provider's unit tests.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use terraform_provider_neutral::backend::xml::{self, Element};

use super::{Server, request_id, serve};
use crate::services::{free_port, wait_until};
use crate::workspace_root;

/// An Authorization header moto reads the service from (it checks no
/// signature).
const AUTHORIZATION: &str = "AWS4-HMAC-SHA256 Credential=AKIDTEST/20240101/us-east-1/route53/aws4_request, SignedHeaders=host, Signature=0";

/// The `moto_server` to run: `.build/moto/venv/bin/moto_server`, else one on
/// PATH; `None` when there is neither.
pub fn moto_bin() -> Option<PathBuf> {
    let built = workspace_root().join(".build/moto/venv/bin/moto_server");
    if built.is_file() {
        return Some(built);
    }
    let on_path = Command::new("moto_server")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    on_path.then(|| PathBuf::from("moto_server"))
}

/// One HTTP/1.1 exchange with `Connection: close`: `(status, body)`.
fn exchange(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(String, String)],
    body: &[u8],
) -> (u16, Vec<u8>) {
    let Ok(mut stream) = TcpStream::connect(host) else {
        return (0, Vec::new());
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(60)));
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        if !matches!(
            lower.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding"
        ) {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
    }
    head.push_str("\r\n");
    if stream.write_all(head.as_bytes()).is_err() || stream.write_all(body).is_err() {
        return (0, Vec::new());
    }
    let mut raw = Vec::new();
    let _ = stream.read_to_end(&mut raw);
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(raw.len());
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let payload = raw.get(split + 4..).unwrap_or(&[]).to_vec();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (status, if chunked { dechunk(&payload) } else { payload })
}

fn dechunk(mut data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(end) = data.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&data[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.trim(), 16).ok())
            .unwrap_or(0);
        let start = end + 2;
        if size == 0 || data.len() < start + size {
            break;
        }
        out.extend_from_slice(&data[start..start + size]);
        data = data.get(start + size + 2..).unwrap_or(&[]);
    }
    out
}

/// `moto_server` on loopback; killed when dropped.
#[derive(Debug)]
pub struct Moto {
    pub url: String,
    host: String,
    child: Child,
}

impl Moto {
    /// Starts moto, or returns `None` when it is not installed.
    pub fn start(dir: &Path) -> Option<Moto> {
        let bin = moto_bin()?;
        std::fs::create_dir_all(dir).expect("moto dir");
        let port = free_port();
        let log = std::fs::File::create(dir.join("moto.log")).expect("moto log");
        let child = Command::new(bin)
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start moto_server");
        let host = format!("127.0.0.1:{port}");
        let moto = Moto {
            url: format!("http://{host}"),
            host,
            child,
        };
        wait_until("moto_server", Duration::from_secs(60), || {
            moto.request("GET", "/2013-04-01/hostedzone", "").0 == 200
        });
        Some(moto)
    }

    /// A Route53 request to moto: `(status, body)`.
    pub fn request(&self, method: &str, path: &str, body: &str) -> (u16, String) {
        let headers = [("Authorization".to_owned(), AUTHORIZATION.to_owned())];
        let (status, body) = exchange(&self.host, method, path, &headers, body.as_bytes());
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    /// Creates a public hosted zone; its id (without `/hostedzone/`).
    pub fn create_zone(&self, name: &str) -> String {
        let body = format!(
            "<CreateHostedZoneRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
             <Name>{name}.</Name><CallerReference>{}</CallerReference></CreateHostedZoneRequest>",
            request_id()
        );
        let (status, answer) = self.request("POST", "/2013-04-01/hostedzone", &body);
        assert!(
            status == 201 || status == 200,
            "create zone: {status} {answer}"
        );
        let root = xml::parse(&answer).expect("XML");
        root.child("HostedZone")
            .and_then(|z| z.text_of("Id"))
            .expect("zone id")
            .trim_start_matches("/hostedzone/")
            .to_owned()
    }

    /// Every record set of the zone, as moto lists them.
    pub fn record_sets(&self, zone_id: &str) -> Vec<Element> {
        let (status, answer) = self.request(
            "GET",
            &format!("/2013-04-01/hostedzone/{zone_id}/rrset?maxitems=100000"),
            "",
        );
        assert_eq!(status, 200, "list: {answer}");
        xml::parse(&answer)
            .expect("XML")
            .child("ResourceRecordSets")
            .map(|s| s.all("ResourceRecordSet").cloned().collect())
            .unwrap_or_default()
    }

    /// The record sets of `name`, as `<type> <value> weight=<w> id=<set>`
    /// lines, sorted.
    pub fn lines(&self, zone_id: &str, name: &str) -> Vec<String> {
        let wanted = format!("{}.", name.trim_end_matches('.'));
        let mut lines: Vec<String> = self
            .record_sets(zone_id)
            .iter()
            .filter(|s| s.text_of("Name") == Some(wanted.as_str()))
            .flat_map(|s| {
                let rtype = s.text_of("Type").unwrap_or("").to_owned();
                let weight = s.text_of("Weight").map(|w| format!(" weight={w}"));
                let id = s.text_of("SetIdentifier").map(|i| format!(" id={i}"));
                let values: Vec<String> = s
                    .child("ResourceRecords")
                    .map(|r| {
                        r.all("ResourceRecord")
                            .filter_map(|r| r.text_of("Value"))
                            .map(str::to_owned)
                            .collect()
                    })
                    .unwrap_or_default();
                values.into_iter().map(move |v| {
                    format!(
                        "{rtype} {v}{}{}",
                        weight.clone().unwrap_or_default(),
                        id.clone().unwrap_or_default()
                    )
                })
            })
            .collect();
        lines.sort();
        lines
    }

    /// One change made by hand: `action` of the record set `set_xml`.
    pub fn change(&self, zone_id: &str, action: &str, set_xml: &str) {
        let body = format!(
            "<ChangeResourceRecordSetsRequest xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
             <ChangeBatch><Changes><Change><Action>{action}</Action>{set_xml}</Change></Changes>\
             </ChangeBatch></ChangeResourceRecordSetsRequest>"
        );
        let (status, answer) = self.request(
            "POST",
            &format!("/2013-04-01/hostedzone/{zone_id}/rrset/"),
            &body,
        );
        assert_eq!(status, 200, "hand change: {answer}");
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What the proxy counts and injects.
#[derive(Debug, Default)]
pub struct ProxyState {
    /// `ChangeResourceRecordSets` calls (refused ones included).
    pub write_calls: usize,
    pub read_calls: usize,
    /// Writes let through before `refuse_writes` are refused.
    pub pass_writes: usize,
    /// Writes still to be refused; they alternate between `Throttling` and
    /// `PriorRequestNotComplete`.
    pub refuse_writes: usize,
    refused: usize,
    upstream: String,
}

type Shared = Arc<Mutex<ProxyState>>;

fn lock(state: &Shared) -> MutexGuard<'_, ProxyState> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

async fn forward(
    State(state): State<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map_or_else(|| uri.path().to_owned(), ToString::to_string);
    let is_write = method == Method::POST && uri.path().contains("/rrset");
    let upstream = {
        let mut state = lock(&state);
        if is_write {
            state.write_calls += 1;
            if state.pass_writes > 0 {
                state.pass_writes -= 1;
            } else if state.refuse_writes > 0 {
                state.refuse_writes -= 1;
                state.refused += 1;
                let code = if state.refused % 2 == 1 {
                    "Throttling"
                } else {
                    "PriorRequestNotComplete"
                };
                let body = format!(
                    "<?xml version=\"1.0\"?>\n<ErrorResponse xmlns=\"https://route53.amazonaws.com/doc/2013-04-01/\">\
                     <Error><Type>Sender</Type><Code>{code}</Code><Message>Rate exceeded</Message></Error>\
                     <RequestId>{}</RequestId></ErrorResponse>",
                    request_id()
                );
                return (
                    StatusCode::BAD_REQUEST,
                    [("content-type", "text/xml")],
                    body,
                )
                    .into_response();
            }
        } else {
            state.read_calls += 1;
        }
        state.upstream.clone()
    };
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let method = method.as_str().to_owned();
    let answer =
        tokio::task::spawn_blocking(move || exchange(&upstream, &method, &path, &headers, &body))
            .await;
    match answer {
        Ok((status, body)) if status > 0 => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [("content-type", "text/xml")],
            body,
        )
            .into_response(),
        _ => StatusCode::BAD_GATEWAY.into_response(),
    }
}

/// The counting, refusing proxy in front of moto.
#[derive(Debug)]
pub struct Route53Proxy {
    server: Server,
    state: Shared,
}

impl Route53Proxy {
    pub fn start(moto: &Moto) -> Route53Proxy {
        let state = Arc::new(Mutex::new(ProxyState {
            upstream: moto.host.clone(),
            ..ProxyState::default()
        }));
        let router = Router::new()
            .fallback(forward)
            .with_state(Arc::clone(&state));
        Route53Proxy {
            server: serve(router),
            state,
        }
    }

    pub fn url(&self) -> String {
        self.server.url.clone()
    }

    pub fn state(&self) -> MutexGuard<'_, ProxyState> {
        lock(&self.state)
    }
}

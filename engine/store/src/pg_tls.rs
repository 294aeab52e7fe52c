//! TLS to PostgreSQL, with libpq's `sslmode` and `sslrootcert` in the store
//! URL: the PostgreSQL client reads only `disable`, `prefer` and `require`
//! and no root certificate, so this module takes both out of the URL and
//! builds the rustls connector they mean.
//!
//! | `sslmode` | TLS | server certificate |
//! |---|---|---|
//! | `disable` | never | — |
//! | `prefer` (default) | when the server offers it | not checked (as libpq) |
//! | `require` | always | not checked — unless `sslrootcert` is given, then as `verify-ca` (as libpq) |
//! | `verify-ca` | always | chains to `sslrootcert` |
//! | `verify-full` | always | chains to `sslrootcert` and names the host |
//!
//! `sslrootcert` is a PEM file of trusted CA certificates; `verify-ca` and
//! `verify-full` need it. This module owns that mapping and the verifiers;
//! it must not connect (that is `pg`).

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, SignatureScheme};
use tokio_postgres_rustls::MakeRustlsConnect;

/// How the server's certificate is checked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Encryption only.
    Nothing,
    /// The chain, to the root certificates.
    Chain,
    /// The chain and the host name (or IP address) it was reached by.
    ChainAndHost,
}

/// The TLS part of a store URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    /// `sslmode` as the PostgreSQL client reads it.
    pub mode: &'static str,
    pub verify: Verify,
    /// The `sslrootcert` file.
    pub root_cert: Option<String>,
}

/// Splits `url` into the URL the PostgreSQL client reads (its `sslmode`
/// one it knows, no `sslrootcert`) and the TLS settings; `Err` names the
/// problem.
pub fn split_url(url: &str) -> Result<(String, TlsSettings), String> {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, query),
        None => (url, ""),
    };
    let mut kept: Vec<&str> = Vec::new();
    let (mut mode, mut root_cert) = (None, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("sslmode", value)) => mode = Some(value.to_owned()),
            Some(("sslrootcert", value)) => root_cert = Some(percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    let (mode, verify) = match (mode.as_deref().unwrap_or("prefer"), &root_cert) {
        ("disable", _) => ("disable", Verify::Nothing),
        ("prefer", _) => ("prefer", Verify::Nothing),
        ("require", None) => ("require", Verify::Nothing),
        ("require" | "verify-ca", Some(_)) => ("require", Verify::Chain),
        ("verify-full", Some(_)) => ("require", Verify::ChainAndHost),
        (wants @ ("verify-ca" | "verify-full"), None) => {
            return Err(format!(
                "sslmode={wants} needs sslrootcert=<PEM file of the CA certificates to trust>"
            ));
        }
        (other, _) => {
            return Err(format!(
                "sslmode={other} is not one of disable, prefer, require, verify-ca, verify-full"
            ));
        }
    };
    if mode == "disable" && root_cert.is_some() {
        return Err("sslrootcert is given but sslmode=disable turns TLS off".to_owned());
    }
    kept.push(match mode {
        "disable" => "sslmode=disable",
        "prefer" => "sslmode=prefer",
        _ => "sslmode=require",
    });
    Ok((
        format!("{base}?{}", kept.join("&")),
        TlsSettings {
            mode,
            verify,
            root_cert,
        },
    ))
}

fn percent_decode(text: &str) -> Result<String, String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| {
                    format!("sslrootcert={text}: a `%` not followed by two hex digits")
                })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| format!("sslrootcert={text}: not UTF-8 once decoded"))
}

/// The rustls connector `settings` ask for; `Err` names the root file's
/// problem.
pub fn connector(settings: &TlsSettings) -> Result<MakeRustlsConnect, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS set-up: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = match (&settings.root_cert, settings.verify) {
        (_, Verify::Nothing) | (None, _) => Arc::new(Unchecked(provider)),
        (Some(file), verify) => {
            let mut roots = rustls::RootCertStore::empty();
            let certificates = CertificateDer::pem_file_iter(file)
                .map_err(|e| format!("sslrootcert {file}: {e}"))?;
            for certificate in certificates {
                let certificate = certificate.map_err(|e| format!("sslrootcert {file}: {e}"))?;
                roots
                    .add(certificate)
                    .map_err(|e| format!("sslrootcert {file}: {e}"))?;
            }
            if roots.is_empty() {
                return Err(format!("sslrootcert {file} holds no certificate"));
            }
            let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|e| format!("sslrootcert {file}: {e}"))?;
            if verify == Verify::Chain {
                Arc::new(AnyName(webpki))
            } else {
                webpki
            }
        }
    };
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}

/// Accepts any certificate but still checks the handshake's signatures:
/// `sslmode=require` without roots encrypts, as libpq does, and trusts the
/// network for who is at the other end.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// The chain check of `verify-ca`: a certificate of the trusted CAs for any
/// name.
#[derive(Debug)]
struct AnyName(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for AnyName {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(url: &str) -> Result<(String, &'static str, Verify, Option<String>), String> {
        split_url(url).map(|(url, s)| (url, s.mode, s.verify, s.root_cert))
    }

    #[test]
    fn libpq_modes_map_to_the_clients_mode_and_a_verification() {
        let base = "postgres://u@h:5432/db";
        assert_eq!(
            split(base),
            Ok((
                format!("{base}?sslmode=prefer"),
                "prefer",
                Verify::Nothing,
                None
            ))
        );
        assert_eq!(
            split(&format!(
                "{base}?target_session_attrs=read-write&sslmode=require"
            )),
            Ok((
                format!("{base}?target_session_attrs=read-write&sslmode=require"),
                "require",
                Verify::Nothing,
                None
            ))
        );
        assert_eq!(
            split(&format!(
                "{base}?sslmode=verify-full&sslrootcert=%2Fetc%2Fca%20x.pem"
            )),
            Ok((
                format!("{base}?sslmode=require"),
                "require",
                Verify::ChainAndHost,
                Some("/etc/ca x.pem".to_owned())
            ))
        );
        assert_eq!(
            split(&format!("{base}?sslrootcert=/ca.pem&sslmode=require")).map(|s| s.2),
            Ok(Verify::Chain),
            "require with a root checks the chain, as libpq"
        );
        assert_eq!(
            split(&format!("{base}?sslmode=verify-ca&sslrootcert=/ca.pem")).map(|s| s.2),
            Ok(Verify::Chain)
        );
        assert_eq!(
            split(&format!("{base}?sslmode=disable")).map(|s| s.1),
            Ok("disable")
        );
    }

    #[test]
    fn impossible_combinations_are_named() {
        let base = "postgres://u@h/db";
        for (query, says) in [
            ("sslmode=verify-full", "needs sslrootcert"),
            ("sslmode=verify-ca", "needs sslrootcert"),
            ("sslmode=allow", "not one of"),
            ("sslmode=disable&sslrootcert=/ca.pem", "turns TLS off"),
            ("sslmode=require&sslrootcert=%zz", "two hex digits"),
        ] {
            let err = split_url(&format!("{base}?{query}")).unwrap_err();
            assert!(err.contains(says), "{query}: {err}");
        }
    }

    #[test]
    fn a_root_file_without_certificates_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("ca.pem");
        std::fs::write(&file, "not a certificate\n").unwrap();
        let settings = TlsSettings {
            mode: "require",
            verify: Verify::ChainAndHost,
            root_cert: Some(file.display().to_string()),
        };
        let err = connector(&settings).err().unwrap();
        assert!(err.contains("holds no certificate"), "{err}");
        let missing = TlsSettings {
            root_cert: Some(dir.path().join("nope.pem").display().to_string()),
            ..settings
        };
        let err = connector(&missing).err().unwrap();
        assert!(err.contains("nope.pem"), "{err}");
    }
}

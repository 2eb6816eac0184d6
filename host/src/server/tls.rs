//! TLS termination's configuration: loading `--tls-cert`, `--tls-key` and `--tls-client-ca` into
//! a rustls `ServerConfig` (ring provider, TLS 1.2 and 1.3), swapping it on reload (SIGHUP, or
//! the files changing: [`watch`])
//! without touching open connections, and naming what a failed handshake did wrong.
//!
//! Every new connection reads the current `ServerConfig` once, when its handshake starts; a
//! reload stores a new one (an `ArcSwap`, so the accept path takes no lock), and connections
//! keep the one they started with. A pair that does not load is refused and the old one stays;
//! loads and refusals are counted for the metrics.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use arc_swap::ArcSwap;

pub mod watch;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{RootCertStore, ServerConfig};

/// Where the certificate, its key and (for mutual TLS) the client CAs are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: Option<PathBuf>,
}

/// Why a certificate, key or client CA file cannot be served.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{flag} {}: cannot read PEM from it", path.display())]
    Pem {
        flag: &'static str,
        path: PathBuf,
        #[source]
        source: rustls::pki_types::pem::Error,
    },
    #[error("{flag} {}: no certificate in it", path.display())]
    NoCertificate { flag: &'static str, path: PathBuf },
    #[error("--tls-client-ca {}: a certificate in it is not a usable CA", path.display())]
    BadClientCa {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("--tls-client-ca {}: cannot verify clients with it", path.display())]
    ClientVerifier {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    /// rustls refused the pair: a key that does not match the certificate, or one it cannot
    /// sign with.
    #[error("--tls-cert {} and --tls-key {}: not a usable pair", cert.display(), key.display())]
    Pair {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// The TLS configuration new handshakes use, and the files it is reloaded from.
pub struct Tls {
    files: TlsFiles,
    current: ArcSwap<ServerConfig>,
    /// Reloads since start that loaded and that were refused: a refused rotation must be
    /// visible to monitoring (`sandport_tls_reloads_total`), not only in the log.
    loaded: AtomicU64,
    refused: AtomicU64,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls").field("files", &self.files).finish()
    }
}

impl Tls {
    /// Loads the files once: any error here stops the server from starting.
    pub fn load(files: TlsFiles) -> Result<Tls, TlsError> {
        let config = build(&files)?;
        Ok(Tls {
            files,
            current: ArcSwap::from_pointee(config),
            loaded: AtomicU64::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// How many reloads loaded, and how many were refused, since start.
    pub fn reloads(&self) -> (u64, u64) {
        (self.loaded.load(Relaxed), self.refused.load(Relaxed))
    }

    /// What a handshake starting now uses.
    pub fn current(&self) -> Arc<ServerConfig> {
        self.current.load_full()
    }

    /// Reads the files again; new handshakes use them once they load. On an error nothing
    /// changes: the pair already served goes on being served.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = build(&self.files).inspect_err(|_| {
            self.refused.fetch_add(1, Relaxed);
        })?;
        self.current.store(Arc::new(config));
        self.loaded.fetch_add(1, Relaxed);
        Ok(())
    }

    /// [`Tls::reload`], its outcome logged (what SIGHUP does).
    pub fn reload_logged(&self) {
        match self.reload() {
            Ok(()) => tracing::info!(
                cert = %self.files.cert.display(),
                "TLS certificate and key reloaded: new handshakes use them"
            ),
            Err(e) => tracing::error!(
                "TLS reload refused, the previous certificate goes on serving: {}",
                crate::error::report(&e)
            ),
        }
    }
}

/// A `ServerConfig` from the files: TLS 1.2 and 1.3 on ring, client certificates verified
/// against `client_ca` when it is given.
fn build(files: &TlsFiles) -> Result<ServerConfig, TlsError> {
    let chain = certificates("--tls-cert", &files.cert)?;
    let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|source| TlsError::Pem {
        flag: "--tls-key",
        path: files.key.clone(),
        source,
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(rustls::ALL_VERSIONS)
        .expect("ring supports TLS 1.2 and 1.3");
    let builder = match &files.client_ca {
        None => builder.with_no_client_auth(),
        Some(path) => {
            let mut roots = RootCertStore::empty();
            for ca in certificates("--tls-client-ca", path)? {
                roots.add(ca).map_err(|source| TlsError::BadClientCa {
                    path: path.clone(),
                    source,
                })?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                .build()
                .map_err(|source| TlsError::ClientVerifier {
                    path: path.clone(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    // rustls checks here that the key is the certificate's (`CertifiedKey::keys_match`).
    builder
        .with_single_cert(chain, key)
        .map_err(|source| TlsError::Pair {
            cert: files.cert.clone(),
            key: files.key.clone(),
            source,
        })
}

fn certificates(flag: &'static str, path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let pem = |source| TlsError::Pem {
        flag,
        path: path.to_owned(),
        source,
    };
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(pem)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(pem)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate {
            flag,
            path: path.to_owned(),
        });
    }
    Ok(certs)
}

/// The subject of a verified client certificate, as `CN=..., O=...` (RFC 4514's attribute
/// names, in the certificate's order); `None` if it does not parse (rustls verified it, so
/// that would be a parser gap, not a forgery).
pub fn subject(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert.as_ref()).ok()?;
    Some(parsed.subject().to_string())
}

/// Why a handshake failed: the `reason` label of `sandport_tls_handshake_failures_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeFailure {
    /// Not whole within the handshake deadline (a stalled or slowloris client).
    Timeout,
    /// Bytes that are not TLS (plain text sent to the TLS port), or corrupt records.
    NotTls,
    /// Under mutual TLS: no client certificate, or one the client CAs do not vouch for.
    ClientCertificate,
    /// The client sent an alert: most often, it does not trust the server's certificate.
    ClientAlert,
    /// No protocol version or cipher suite in common, or another protocol error.
    Protocol,
    /// The client closed (or reset) the connection before the handshake was done.
    Closed,
}

impl HandshakeFailure {
    pub const ALL: [HandshakeFailure; 6] = [
        HandshakeFailure::Timeout,
        HandshakeFailure::NotTls,
        HandshakeFailure::ClientCertificate,
        HandshakeFailure::ClientAlert,
        HandshakeFailure::Protocol,
        HandshakeFailure::Closed,
    ];

    pub fn label(self) -> &'static str {
        match self {
            HandshakeFailure::Timeout => "timeout",
            HandshakeFailure::NotTls => "not_tls",
            HandshakeFailure::ClientCertificate => "client_certificate",
            HandshakeFailure::ClientAlert => "client_alert",
            HandshakeFailure::Protocol => "protocol",
            HandshakeFailure::Closed => "client_closed",
        }
    }

    /// What rustls's error says about the client.
    pub fn of(e: &rustls::Error) -> HandshakeFailure {
        use rustls::Error as E;
        match e {
            E::InvalidMessage(_) | E::DecryptError => HandshakeFailure::NotTls,
            E::NoCertificatesPresented | E::InvalidCertificate(_) => {
                HandshakeFailure::ClientCertificate
            }
            E::AlertReceived(_) => HandshakeFailure::ClientAlert,
            _ => HandshakeFailure::Protocol,
        }
    }
}

#[cfg(test)]
mod tests;

//! Certificates made for the TLS tests (rcgen), written as PEM files, and the rustls client
//! that talks to the server with them.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::support::{TempDir, REPLY_TIMEOUT};

/// A CA, and what it signs, in one temporary folder.
pub struct Pki {
    pub dir: TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA's certificate, for `-CAfile` and `--tls-client-ca`.
    pub ca_pem: PathBuf,
}

/// A certificate and its key, as files.
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        let dir = TempDir::new(tag);
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{tag} CA"));
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_pem = dir.write("ca.pem", ca.pem().as_bytes());
        Pki { dir, ca, ca_pem }
    }

    /// A server certificate for `localhost` and 127.0.0.1 with common name `cn`, valid now
    /// unless `expired`, written as `<file>.pem` and `<file>.key`.
    pub fn server(&self, file: &str, cn: &str, expired: bool) -> Pair {
        let mut params =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        if expired {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        }
        self.sign(file, params)
    }

    /// A client certificate with common name `cn` in organisation `org`.
    pub fn client(&self, file: &str, cn: &str, org: &str) -> Pair {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name.push(DnType::CommonName, cn);
        params
            .distinguished_name
            .push(DnType::OrganizationName, org);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        self.sign(file, params)
    }

    fn sign(&self, file: &str, params: CertificateParams) -> Pair {
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &*self.ca).unwrap();
        Pair {
            cert: self
                .dir
                .write(&format!("{file}.pem"), cert.pem().as_bytes()),
            key: self
                .dir
                .write(&format!("{file}.key"), key.serialize_pem().as_bytes()),
        }
    }

    /// A client trusting this CA only, speaking any version, without a certificate.
    pub fn client_config(&self) -> ClientConfig {
        self.client_config_with(rustls::ALL_VERSIONS, None)
    }

    /// A client trusting this CA only, speaking `versions`, showing `identity` if given.
    pub fn client_config_with(
        &self,
        versions: &[&'static rustls::SupportedProtocolVersion],
        identity: Option<&Pair>,
    ) -> ClientConfig {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .unwrap()
            .with_root_certificates(roots);
        match identity {
            None => builder.with_no_client_auth(),
            Some(pair) => {
                let chain = CertificateDer::pem_file_iter(&pair.cert)
                    .unwrap()
                    .collect::<Result<Vec<_>, _>>()
                    .unwrap();
                let key = PrivateKeyDer::from_pem_file(&pair.key).unwrap();
                builder.with_client_auth_cert(chain, key).unwrap()
            }
        }
    }
}

/// `--tls-cert` and `--tls-key` for `pair`.
pub fn tls_args(pair: &Pair) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        pair.cert.display().to_string(),
        "--tls-key".into(),
        pair.key.display().to_string(),
    ]
}

/// A blocking rustls client connection to the server.
pub struct TlsClient {
    stream: StreamOwned<ClientConnection, TcpStream>,
}

impl TlsClient {
    /// Connects and completes the handshake; its error if the handshake fails.
    pub fn connect(addr: SocketAddr, config: &ClientConfig) -> io::Result<TlsClient> {
        let tcp = TcpStream::connect(addr)?;
        TlsClient::over(tcp, config)
    }

    /// A TLS client over `tcp`, which may already have carried other bytes (a PROXY header).
    pub fn over(tcp: TcpStream, config: &ClientConfig) -> io::Result<TlsClient> {
        tcp.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let name = ServerName::try_from("localhost").unwrap();
        let conn = ClientConnection::new(Arc::new(config.clone()), name).unwrap();
        let mut stream = StreamOwned::new(conn, tcp);
        while stream.conn.is_handshaking() {
            stream.conn.complete_io(&mut stream.sock)?;
        }
        Ok(TlsClient { stream })
    }

    /// The server certificate's subject.
    pub fn server_subject(&self) -> String {
        let chain = self
            .stream
            .conn
            .peer_certificates()
            .expect("a server chain");
        let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref()).unwrap();
        cert.subject().to_string()
    }

    pub fn version(&self) -> Option<rustls::ProtocolVersion> {
        self.stream.conn.protocol_version()
    }

    pub fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.stream.write_all(bytes)?;
        self.stream.flush()
    }

    /// One line, without its `\n`.
    pub fn line(&mut self) -> io::Result<String> {
        let mut out = Vec::new();
        let mut byte = [0];
        loop {
            match self.stream.read(&mut byte)? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                _ if byte[0] == b'\n' => return Ok(String::from_utf8_lossy(&out).into()),
                _ => out.push(byte[0]),
            }
        }
    }

    /// Sends `line` and returns the line that comes back.
    pub fn roundtrip(&mut self, line: &str) -> io::Result<String> {
        self.send(format!("{line}\n").as_bytes())?;
        self.line()
    }

    /// One length-prefixed frame's payload.
    pub fn frame(&mut self) -> io::Result<Vec<u8>> {
        let mut len = [0; 4];
        self.stream.read_exact(&mut len)?;
        let mut payload = vec![0; u32::from_be_bytes(len) as usize];
        self.stream.read_exact(&mut payload)?;
        Ok(payload)
    }
}

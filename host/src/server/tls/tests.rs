//! Loading, refusing and reloading certificate files; the subject plugins see; failure labels.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};

use rcgen::{CertificateParams, DnType, KeyPair};

use super::*;

/// A fresh directory under the system's temporary one (removed by the test when it passes).
fn scratch() -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("sandport-tls-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A self-signed certificate for `name` and its key, in PEM.
fn self_signed(name: &str) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec![name.to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, name);
    params
        .distinguished_name
        .push(DnType::OrganizationName, "Acme");
    (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
}

fn files(dir: &std::path::Path, cert: &str, key: &str) -> TlsFiles {
    let (c, k) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&c, cert).unwrap();
    std::fs::write(&k, key).unwrap();
    TlsFiles {
        cert: c,
        key: k,
        client_ca: None,
    }
}

#[test]
fn a_pair_loads_and_a_reload_swaps_it_for_new_handshakes() {
    let dir = scratch();
    let (cert, key) = self_signed("one.test");
    let f = files(&dir, &cert, &key);
    let tls = Tls::load(f.clone()).unwrap();
    let before = tls.current();
    let (cert, key) = self_signed("two.test");
    files(&dir, &cert, &key);
    assert_eq!(tls.reloads(), (0, 0), "loading at start is not a reload");
    tls.reload().unwrap();
    assert!(
        !Arc::ptr_eq(&before, &tls.current()),
        "new handshakes get the new pair"
    );
    assert_eq!(tls.reloads(), (1, 0));
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_bad_new_pair_is_refused_and_the_old_one_stays() {
    let dir = scratch();
    let (cert, key) = self_signed("one.test");
    let tls = Tls::load(files(&dir, &cert, &key)).unwrap();
    let before = tls.current();
    // A key that is not the certificate's.
    let (_, other_key) = self_signed("other.test");
    files(&dir, &cert, &other_key);
    assert!(matches!(tls.reload(), Err(TlsError::Pair { .. })));
    // Not PEM at all.
    files(&dir, "garbage", &key);
    assert!(matches!(tls.reload(), Err(TlsError::NoCertificate { .. })));
    assert!(
        Arc::ptr_eq(&before, &tls.current()),
        "the old pair goes on serving"
    );
    assert_eq!(tls.reloads(), (0, 2), "both refusals counted");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn each_unusable_file_says_which_flag_it_came_from() {
    let dir = scratch();
    let (cert, key) = self_signed("one.test");
    let mut f = files(&dir, &cert, &key);
    f.key = dir.join("missing.pem");
    let e = Tls::load(f.clone()).expect_err("no key file");
    assert!(
        matches!(
            e,
            TlsError::Pem {
                flag: "--tls-key",
                ..
            }
        ),
        "{e:?}"
    );
    f.key = dir.join("cert.pem");
    let e = Tls::load(f.clone()).expect_err("a certificate is no key");
    assert!(
        matches!(
            e,
            TlsError::Pem {
                flag: "--tls-key",
                ..
            }
        ),
        "{e:?}"
    );
    f.key = dir.join("key.pem");
    f.client_ca = Some(dir.join("key.pem"));
    let e = Tls::load(f.clone()).expect_err("a key is no CA");
    assert!(
        matches!(
            e,
            TlsError::NoCertificate {
                flag: "--tls-client-ca",
                ..
            }
        ),
        "{e:?}"
    );
    f.client_ca = Some(dir.join("cert.pem"));
    Tls::load(f).expect("a self-signed certificate is its own CA");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn the_subject_reads_as_attribute_pairs() {
    let (cert, _) = self_signed("device-7");
    let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
    assert_eq!(subject(&der).as_deref(), Some("CN=device-7, O=Acme"));
}

#[test]
fn failures_have_distinct_labels_and_plain_text_is_not_tls() {
    let labels: std::collections::BTreeSet<_> =
        HandshakeFailure::ALL.iter().map(|f| f.label()).collect();
    assert_eq!(labels.len(), HandshakeFailure::ALL.len());
    for (i, f) in HandshakeFailure::ALL.iter().enumerate() {
        assert_eq!(*f as usize, i, "{f:?} out of order in ALL");
    }
    let plain = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
    assert_eq!(HandshakeFailure::of(&plain), HandshakeFailure::NotTls);
    let alert = rustls::Error::AlertReceived(rustls::AlertDescription::UnknownCA);
    assert_eq!(HandshakeFailure::of(&alert), HandshakeFailure::ClientAlert);
    let none = rustls::Error::NoCertificatesPresented;
    assert_eq!(
        HandshakeFailure::of(&none),
        HandshakeFailure::ClientCertificate
    );
}

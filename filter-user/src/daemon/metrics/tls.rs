//! `[metrics] tls`: the certificate chain and key (PEM) for HTTPS, read at
//! start and again on every reload (the files are watched too), so a renewed
//! certificate is served without a restart.
use std::{
    io::Read,
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::Arc,
};

use tokio_rustls::{
    rustls::{
        self,
        pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer},
        ServerConfig,
    },
    TlsAcceptor,
};

use crate::policy::TlsFiles;

/// PEM files are small; this only stops a wrong path from being read whole.
const MAX_PEM_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("metrics TLS: cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("metrics TLS: {} is not a regular file", path.display())]
    NotAFile { path: PathBuf },
    #[error("metrics TLS: {} is larger than {MAX_PEM_BYTES} bytes", path.display())]
    TooLarge { path: PathBuf },
    #[error("metrics TLS: {}: {what}", path.display())]
    Pem { path: PathBuf, what: String },
    #[error("metrics TLS: certificate {} and key {} do not make a server configuration: {source}", cert.display(), key.display())]
    Config {
        cert: PathBuf,
        key: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

/// Reads a file that must be a regular one, without blocking on a FIFO.
fn read_pem(path: &Path) -> Result<Vec<u8>, TlsError> {
    let read = |source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NONBLOCK.bits())
        .open(path)
        .map_err(read)?;
    let meta = f.metadata().map_err(read)?;
    if !meta.is_file() {
        return Err(TlsError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    if meta.len() > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    let mut out = Vec::new();
    f.take(MAX_PEM_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(read)?;
    Ok(out)
}

/// Builds an acceptor from the files (HTTP/1.1 only, TLS 1.2 and 1.3).
pub fn load(files: &TlsFiles) -> Result<TlsAcceptor, TlsError> {
    let pem = |path: &Path, what: String| TlsError::Pem {
        path: path.to_path_buf(),
        what,
    };
    let cert_pem = read_pem(&files.cert)?;
    let certs = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem(&files.cert, format!("not a PEM certificate chain: {e}")))?;
    if certs.is_empty() {
        return Err(pem(
            &files.cert,
            "no CERTIFICATE block (expected PEM, leaf first)".into(),
        ));
    }
    let key_pem = read_pem(&files.key)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| {
        pem(
            &files.key,
            format!("no PEM private key (PKCS#8, PKCS#1 or SEC1): {e}"),
        )
    })?;
    let config_err = |source| TlsError::Config {
        cert: files.cert.clone(),
        key: files.key.clone(),
        source,
    };
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(config_err)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("pc-tls-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A self-signed pair from openssl(1), or None where it is missing.
    fn openssl_pair(d: &Path) -> Option<TlsFiles> {
        let files = TlsFiles {
            cert: d.join("cert.pem"),
            key: d.join("key.pem"),
        };
        let ok = std::process::Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
            .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .args(["-subj", "/CN=localhost", "-keyout"])
            .arg(&files.key)
            .arg("-out")
            .arg(&files.cert)
            .stderr(std::process::Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        ok.then_some(files)
    }

    #[test]
    fn tls_files_are_refused_with_the_file_named() {
        let d = dir("bad");
        let files = TlsFiles {
            cert: d.join("missing.pem"),
            key: d.join("key.pem"),
        };
        let e = load(&files).err().unwrap().to_string();
        assert!(e.contains("missing.pem"), "{e}");
        std::fs::write(d.join("garbage.pem"), "hello\n").unwrap();
        let e = load(&TlsFiles {
            cert: d.join("garbage.pem"),
            key: d.join("key.pem"),
        })
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("garbage.pem") && e.contains("CERTIFICATE"),
            "{e}"
        );
        // A FIFO is refused without blocking.
        let fifo = d.join("fifo.pem");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = load(&TlsFiles {
            cert: fifo,
            key: d.join("key.pem"),
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn a_certificate_and_key_from_openssl_make_an_acceptor() {
        let d = dir("good");
        let Some(files) = openssl_pair(&d) else {
            // The e2e suite runs TLS against the daemon with openssl too;
            // bootstrap installs it. Fail loudly rather than pass silently.
            panic!("openssl(1) is needed for this test (apt-get install openssl)");
        };
        load(&files).unwrap();
        // Key and certificate swapped: refused, naming both.
        let e = load(&TlsFiles {
            cert: files.key.clone(),
            key: files.cert.clone(),
        })
        .err()
        .unwrap()
        .to_string();
        assert!(e.contains("key.pem"), "{e}");
        let _ = std::fs::remove_dir_all(&d);
    }
}

//! TLS and mutual TLS from PEM files, for the nodes' servers and for their clients (the edge's
//! cloud client, the `edgeinfer` commands). Every file is read when the settings are checked,
//! before any port is bound, and a problem names the flag and the file.
//!
//! Plaintext stays the default, for the demo; a node serving plaintext says so in its log.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls;

/// The HTTP listener's TLS configuration (rustls, as tonic's).
pub type HttpTlsConfig = rustls::ServerConfig;

use tonic::transport::{Certificate, ClientTlsConfig, Identity, ServerTlsConfig};

/// A TLS file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// The file could not be read (the reason is the error's source).
    #[error("{flag} {}: cannot read", path.display())]
    Read {
        /// The flag and environment variable that named the file.
        flag: String,
        /// The file.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The file is larger than any certificate bundle.
    #[error("{flag} {}: larger than {MAX_PEM_BYTES} bytes; not a PEM file", path.display())]
    TooLarge {
        /// The flag and environment variable that named the file.
        flag: String,
        /// The file.
        path: PathBuf,
    },
    /// The file was read but holds no PEM block of the expected kind.
    #[error("{flag} {}: no PEM {kind} in the file", path.display())]
    NotPem {
        /// The flag and environment variable that named the file.
        flag: String,
        /// The file.
        path: PathBuf,
        /// What was expected: "CERTIFICATE" or "PRIVATE KEY".
        kind: &'static str,
    },
    /// The PEM blocks were found but rustls cannot use them (for the HTTP listener).
    #[error("{flag} {}: {message}", path.display())]
    Unusable {
        /// The flag and environment variable that named the file.
        flag: String,
        /// The file.
        path: PathBuf,
        /// What rustls said.
        message: String,
    },
}

/// Largest PEM file read: a system CA bundle is about 200 kB.
pub const MAX_PEM_BYTES: u64 = 1 << 20;

/// Reads a PEM file named by `flag`, checking it holds at least one block of the expected kind
/// (tonic parses it only when the server or channel is built, after the ports are bound: too
/// late for a clear start-up error).
fn read_pem(flag: &str, path: &Path, kind: &'static str) -> Result<Vec<u8>, TlsError> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| f.take(MAX_PEM_BYTES + 1).read_to_end(&mut bytes))
        .map_err(|source| TlsError::Read {
            flag: flag.to_string(),
            path: path.to_path_buf(),
            source,
        })?;
    if bytes.len() as u64 > MAX_PEM_BYTES {
        return Err(TlsError::TooLarge {
            flag: flag.to_string(),
            path: path.to_path_buf(),
        });
    }
    let text = String::from_utf8_lossy(&bytes);
    let found = text.lines().any(|line| {
        line.starts_with("-----BEGIN ") && line.trim_end().ends_with(&format!("{kind}-----"))
    });
    if found {
        Ok(bytes)
    } else {
        Err(TlsError::NotPem {
            flag: flag.to_string(),
            path: path.to_path_buf(),
            kind,
        })
    }
}

/// The flags of a server's TLS settings, for error messages: `--tls-cert / EDGE_TLS_CERT`.
fn flag(name: &str, env_prefix: &str) -> String {
    format!(
        "--{name} / {env_prefix}_{}",
        name.replace('-', "_").to_uppercase()
    )
}

/// A server's TLS settings: its certificate chain and key, and optionally the CA that client
/// certificates must chain to (mutual TLS). `None` when `cert` is not set (plaintext).
/// `env_prefix` (`EDGE`, `CLOUD`) names the environment variables in errors. The flags'
/// parser makes sure `cert` and `key` come together.
pub fn server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    client_ca: Option<&Path>,
    env_prefix: &str,
) -> Result<Option<ServerTlsConfig>, TlsError> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let identity = Identity::from_pem(
        read_pem(&flag("tls-cert", env_prefix), cert, "CERTIFICATE")?,
        read_pem(&flag("tls-key", env_prefix), key, "PRIVATE KEY")?,
    );
    let mut config = ServerTlsConfig::new().identity(identity);
    if let Some(ca) = client_ca {
        let ca = read_pem(&flag("tls-client-ca", env_prefix), ca, "CERTIFICATE")?;
        config = config.client_ca_root(Certificate::from_pem(ca));
    }
    Ok(Some(config))
}

/// The same settings as [`server_config`], for the OIP HTTP listener: tonic's configuration is
/// opaque, so the HTTP server builds its own rustls one from the same files (ring, as tonic's;
/// HTTP/1.1 by ALPN). `None` when `cert` is not set.
pub fn http_server_config(
    cert: Option<&Path>,
    key: Option<&Path>,
    client_ca: Option<&Path>,
    env_prefix: &str,
) -> Result<Option<Arc<rustls::ServerConfig>>, TlsError> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};

    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let unusable = |flag: &str, path: &Path, message: String| TlsError::Unusable {
        flag: flag.to_string(),
        path: path.to_path_buf(),
        message,
    };
    let certs = |flag: &str, path: &Path| -> Result<Vec<CertificateDer<'static>>, TlsError> {
        let pem = read_pem(flag, path, "CERTIFICATE")?;
        CertificateDer::pem_slice_iter(&pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unusable(flag, path, e.to_string()))
    };
    let cert_flag = flag("tls-cert", env_prefix);
    let key_flag = flag("tls-key", env_prefix);
    let chain = certs(&cert_flag, cert)?;
    let private_key = PrivateKeyDer::from_pem_slice(&read_pem(&key_flag, key, "PRIVATE KEY")?)
        .map_err(|e| unusable(&key_flag, key, e.to_string()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| unusable(&cert_flag, cert, e.to_string()))?;
    let builder = match client_ca {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let ca_flag = flag("tls-client-ca", env_prefix);
            let mut roots = rustls::RootCertStore::empty();
            for c in certs(&ca_flag, ca)? {
                roots
                    .add(c)
                    .map_err(|e| unusable(&ca_flag, ca, e.to_string()))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .map_err(|e| unusable(&ca_flag, ca, e.to_string()))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(chain, private_key)
        .map_err(|e| unusable(&key_flag, key, e.to_string()))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(Arc::new(config)))
}

/// Files of a client's TLS settings, each with the flag that named it (for errors).
#[derive(Clone, Copy, Debug, Default)]
pub struct ClientFiles<'a> {
    /// CA certificate(s) the server's certificate must chain to; the system's roots when
    /// absent.
    pub ca: Option<(&'a str, &'a Path)>,
    /// The client's own certificate chain, for mutual TLS.
    pub cert: Option<(&'a str, &'a Path)>,
    /// The key of `cert`.
    pub key: Option<(&'a str, &'a Path)>,
}

impl ClientFiles<'_> {
    /// True when any file is set.
    pub fn any(&self) -> bool {
        self.ca.is_some() || self.cert.is_some() || self.key.is_some()
    }

    /// The client TLS configuration for a server whose certificate names `domain`.
    pub fn config(&self, domain: &str) -> Result<ClientTlsConfig, TlsError> {
        let mut config = ClientTlsConfig::new().domain_name(domain);
        config = match self.ca {
            Some((flag, path)) => {
                config.ca_certificate(Certificate::from_pem(read_pem(flag, path, "CERTIFICATE")?))
            }
            None => config.with_native_roots(),
        };
        if let (Some((cert_flag, cert)), Some((key_flag, key))) = (self.cert, self.key) {
            config = config.identity(Identity::from_pem(
                read_pem(cert_flag, cert, "CERTIFICATE")?,
                read_pem(key_flag, key, "PRIVATE KEY")?,
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_and_wrong_files_name_the_flag() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.pem");
        let e = server_config(Some(&missing), Some(&missing), None, "EDGE")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("--tls-cert / EDGE_TLS_CERT "), "{e}");
        assert!(
            e.ends_with("nope.pem: cannot read"),
            "the reason is the source: {e}"
        );

        let not_pem = dir.path().join("cert.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let e = server_config(Some(&not_pem), Some(&not_pem), None, "CLOUD")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("--tls-cert / CLOUD_TLS_CERT ")
                && e.ends_with("no PEM CERTIFICATE in the file"),
            "{e}"
        );

        let files = ClientFiles {
            ca: Some(("--ca", &not_pem)),
            ..Default::default()
        };
        let e = files.config("localhost").unwrap_err().to_string();
        assert!(e.starts_with("--ca "), "{e}");

        let huge = dir.path().join("huge.pem");
        std::fs::write(&huge, vec![b'A'; (MAX_PEM_BYTES + 1) as usize]).unwrap();
        let e = server_config(Some(&huge), Some(&huge), None, "EDGE")
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than 1048576 bytes"), "{e}");
    }

    #[test]
    fn no_certificate_means_plaintext() {
        assert!(server_config(None, None, None, "EDGE").unwrap().is_none());
        assert!(!ClientFiles::default().any());
    }
}

//! TLS termination with rustls: certificates chosen by SNI from their SANs (wildcards
//! included, the first certificate as the default), a minimum protocol version, and the
//! development certificate command.

use std::path::Path;
use std::sync::Arc;

use arc_swap::ArcSwap;
use pingora_core::protocols::tls::CaType;
use pingora_core::utils::tls::WrappedX509;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::diagnostics::Diagnostics;
use crate::config::{KeyPath, TlsConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MinVersion {
    Tls12,
    Tls13,
}

/// One certificate with the names it serves.
pub struct LoadedCert {
    /// The file it came from; the metric label.
    pub label: String,
    /// SAN DNS names, lowercased; `*.example.com` kept as written.
    pub names: Vec<String>,
    /// When the leaf certificate expires, in seconds since the epoch.
    pub not_after: i64,
    key: Arc<CertifiedKey>,
}

/// A certificate this close to expiring is warned about at start and on every reload.
pub const EXPIRY_WARNING_DAYS: i64 = 14;

pub struct CertStore {
    pub certs: Vec<LoadedCert>,
    pub min_version: MinVersion,
}

impl CertStore {
    pub fn compile(
        cfg: &TlsConfig,
        path: &KeyPath,
        base: &Path,
        diags: &mut Diagnostics,
    ) -> Option<CertStore> {
        let min_version = match cfg.min_version.as_str() {
            "1.2" => MinVersion::Tls12,
            "1.3" => MinVersion::Tls13,
            other => {
                diags.error(
                    path.key("min_version"),
                    format!("`{other}` is not supported: use \"1.2\" or \"1.3\""),
                );
                MinVersion::Tls12
            }
        };
        if cfg.certificates.is_empty() {
            diags.error(
                path.key("certificates"),
                "needs at least one [[tls.certificates]] entry",
            );
        }
        let mut certs = Vec::new();
        for (i, c) in cfg.certificates.iter().enumerate() {
            let cp = path.key("certificates").index(i);
            let key_pem = match c.key.resolve(base) {
                Ok(secret) => secret,
                Err(e) => {
                    diags.error(cp.key("key"), e);
                    continue;
                }
            };
            match load_cert(&base.join(&c.cert), key_pem.expose()) {
                Ok(mut loaded) => {
                    loaded.label = c.cert.clone();
                    warn_if_expiring(&loaded, &cp.key("cert"), diags);
                    certs.push(loaded);
                }
                Err(CertError::Cert(e)) => diags.error(cp.key("cert"), e),
                Err(CertError::Key(e)) => diags.error(cp.key("key"), e),
            }
        }
        if certs.len() != cfg.certificates.len() {
            return None;
        }
        Some(CertStore { certs, min_version })
    }

    fn choose(&self, sni: Option<&str>) -> Option<&LoadedCert> {
        if let Some(name) = sni.map(str::to_ascii_lowercase) {
            let exact = self.certs.iter().find(|c| c.names.contains(&name));
            let wildcard = || {
                // RFC 6125: a wildcard covers exactly one label.
                let (_, parent) = name.split_once('.')?;
                let wanted = format!("*.{parent}");
                self.certs.iter().find(|c| c.names.contains(&wanted))
            };
            if let Some(found) = exact.or_else(wildcard) {
                return Some(found);
            }
        }
        self.certs.first()
    }
}

fn warn_if_expiring(cert: &LoadedCert, path: &KeyPath, diags: &mut Diagnostics) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64);
    let left = cert.not_after - now;
    let when = time::OffsetDateTime::from_unix_timestamp(cert.not_after)
        .map(|t| t.date().to_string())
        .unwrap_or_default();
    if left <= 0 {
        diags.warn(path.clone(), format!("`{}` expired on {when}", cert.label));
    } else if left < EXPIRY_WARNING_DAYS * 86_400 {
        diags.warn(
            path.clone(),
            format!(
                "`{}` expires on {when}, in {} day(s)",
                cert.label,
                (left + 86_399) / 86_400
            ),
        );
    }
}

enum CertError {
    Cert(String),
    Key(String),
}

fn load_cert(cert_path: &Path, key_pem: &str) -> Result<LoadedCert, CertError> {
    let cert_text = std::fs::read(cert_path)
        .map_err(|e| CertError::Cert(format!("cannot read `{}`: {e}", cert_path.display())))?;
    let chain: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut cert_text.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| CertError::Cert(format!("`{}` is not valid PEM: {e}", cert_path.display())))?;
    let leaf = chain.first().ok_or_else(|| {
        CertError::Cert(format!("`{}` holds no certificate", cert_path.display()))
    })?;
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).map_err(|e| {
        CertError::Cert(format!(
            "`{}` is not a valid certificate: {e}",
            cert_path.display()
        ))
    })?;
    let not_after = parsed.validity().not_after.timestamp();
    let mut names = Vec::new();
    if let Ok(Some(san)) = parsed.subject_alternative_name() {
        for name in &san.value.general_names {
            match name {
                x509_parser::extensions::GeneralName::DNSName(dns) => {
                    names.push(dns.to_ascii_lowercase())
                }
                x509_parser::extensions::GeneralName::IPAddress(ip) => {
                    if let Some(addr) = ip_from_bytes(ip) {
                        names.push(addr.to_string());
                    }
                }
                _ => {}
            }
        }
    }

    let key: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .map_err(|e| CertError::Key(format!("the key is not valid PEM: {e}")))?
        .ok_or_else(|| {
            CertError::Key("holds no private key (expected a PEM \"PRIVATE KEY\" block)".into())
        })?;
    let certified =
        CertifiedKey::from_der(chain, key, &provider(MinVersion::Tls12)).map_err(|e| {
            CertError::Key(format!(
                "does not fit the certificate `{}`: {e}",
                cert_path.display()
            ))
        })?;
    Ok(LoadedCert {
        label: String::new(),
        names,
        not_after,
        key: Arc::new(certified),
    })
}

fn ip_from_bytes(bytes: &[u8]) -> Option<std::net::IpAddr> {
    match bytes.len() {
        4 => <[u8; 4]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        16 => <[u8; 16]>::try_from(bytes).ok().map(std::net::IpAddr::from),
        _ => None,
    }
}

/// Serves whichever certificate store is current; reloads swap the store underneath.
#[derive(Debug)]
pub struct SniResolver {
    store: ArcSwap<CertStore>,
}

impl std::fmt::Debug for CertStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CertStore")
            .field("certs", &self.certs.len())
            .finish()
    }
}

impl SniResolver {
    pub fn new(store: Arc<CertStore>) -> Self {
        SniResolver {
            store: ArcSwap::new(store),
        }
    }

    /// New handshakes get the new certificates; connections already up keep theirs.
    pub fn swap(&self, store: Arc<CertStore>) {
        self.store.store(store);
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let store = self.store.load();
        store.choose(hello.server_name()).map(|c| c.key.clone())
    }
}

/// The crypto provider for a minimum version: TLS 1.3 only drops every TLS 1.2 cipher suite.
pub fn provider(min: MinVersion) -> CryptoProvider {
    let mut provider = rustls::crypto::ring::default_provider();
    if min == MinVersion::Tls13 {
        provider
            .cipher_suites
            .retain(|s| s.version() == &rustls::version::TLS13);
    }
    provider
}

/// Installs the process-wide provider before Pingora installs its default. Pingora's rustls
/// listener always offers TLS 1.2 and 1.3; with `min_version = "1.3"` no TLS 1.2 suite is left,
/// so a TLS 1.2 handshake fails. This applies to upstream TLS too (documented).
pub fn install_provider(min: MinVersion) {
    let _ = CryptoProvider::install_default(provider(min));
}

pub fn load_ca_file(path: &Path) -> Result<Arc<CaType>, String> {
    let text = std::fs::read(path).map_err(|e| format!("cannot read `{}`: {e}", path.display()))?;
    let ders: Vec<CertificateDer<'static>> = rustls_pemfile::certs(&mut text.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`{}` is not valid PEM: {e}", path.display()))?;
    if ders.is_empty() {
        return Err(format!("`{}` holds no certificate", path.display()));
    }
    let mut wrapped = Vec::new();
    for der in ders {
        // Pingora parses these again and panics on bad DER: check them here first.
        x509_parser::parse_x509_certificate(&der)
            .map_err(|e| format!("`{}` holds an invalid certificate: {e}", path.display()))?;
        wrapped.push(WrappedX509::new(
            der.to_vec(),
            pingora_core::utils::tls::parse_x509,
        ));
    }
    Ok(Arc::from(wrapped.into_boxed_slice()))
}

/// `palisade cert dev`: a self-signed certificate for local use, never for production.
pub fn write_dev_cert(
    dir: &Path,
    hosts: &[String],
    days: u32,
) -> Result<(std::path::PathBuf, std::path::PathBuf), String> {
    let mut names: Vec<String> = if hosts.is_empty() {
        vec!["localhost".into(), "127.0.0.1".into(), "::1".into()]
    } else {
        hosts.to_vec()
    };
    names.dedup();
    let key = rcgen::KeyPair::generate().map_err(|e| format!("cannot generate a key: {e}"))?;
    let mut params =
        rcgen::CertificateParams::new(names).map_err(|e| format!("invalid host name: {e}"))?;
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "Palisade development certificate",
    );
    let now = time::OffsetDateTime::now_utc();
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(i64::from(days.max(1)));
    let cert = params
        .self_signed(&key)
        .map_err(|e| format!("cannot sign the certificate: {e}"))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create `{}`: {e}", dir.display()))?;
    let cert_path = dir.join("dev.pem");
    let key_path = dir.join("dev-key.pem");
    std::fs::write(&cert_path, cert.pem())
        .map_err(|e| format!("cannot write `{}`: {e}", cert_path.display()))?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    Ok((cert_path, key_path))
}

fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))?;
    file.write_all(bytes)
        .map_err(|e| format!("cannot write `{}`: {e}", path.display()))
}

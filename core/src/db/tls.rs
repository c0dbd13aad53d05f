//! TLS to PostgreSQL, chosen by the `sslmode` (and `sslrootcert`) of `DATABASE_URL` the
//! way libpq reads them, with rustls:
//!
//! | `sslmode` | what happens |
//! |---|---|
//! | unset, `disable` | plain TCP, as before TLS support (no TLS is offered) |
//! | `prefer` | TLS if the server offers it, else plain; the certificate is not checked |
//! | `require` | TLS or no connection; the certificate is not checked (libpq does the same), unless `sslrootcert` is given: then it is checked as for `verify-ca` (libpq too) |
//! | `verify-ca` | TLS; the server's chain must lead to a trusted root |
//! | `verify-full` | as `verify-ca`, and the certificate must name the host connected to |
//!
//! Trusted roots come from the PEM file `sslrootcert` names, else (or for
//! `sslrootcert=system`) from the system store. tokio-postgres knows neither the `verify-*`
//! modes nor `sslrootcert`, so both are taken out of the string before it is parsed.

use std::str::FromStr;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::DbError;

/// `sslmode` as libpq spells it (`allow` is read as `prefer`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl FromStr for SslMode {
    type Err = DbError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "disable" => Ok(SslMode::Disable),
            "allow" | "prefer" => Ok(SslMode::Prefer),
            "require" => Ok(SslMode::Require),
            "verify-ca" => Ok(SslMode::VerifyCa),
            "verify-full" => Ok(SslMode::VerifyFull),
            _ => Err(DbError::Config(
                "sslmode must be disable, allow, prefer, require, verify-ca or verify-full".into(),
            )),
        }
    }
}

/// A parsed `DATABASE_URL`: what tokio-postgres understands, and the TLS connector to use
/// (`None`: plain TCP).
pub struct ConnectConfig {
    pub pg: tokio_postgres::Config,
    pub tls: Option<MakeRustlsConnect>,
    /// What the URL asked for; `None` when it did not say.
    pub mode: Option<SslMode>,
}

impl std::fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectConfig")
            .field("mode", &self.mode)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

/// Parses a `postgres://` URL or a `key=value` string, honouring `sslmode`/`sslrootcert`.
pub fn parse(database_url: &str) -> Result<ConnectConfig, DbError> {
    let (rest, taken) = take_params(database_url, &["sslmode", "sslrootcert"])?;
    let mut mode = None;
    let mut root_cert = None;
    for (key, value) in taken {
        match key.as_str() {
            "sslmode" => mode = Some(value.parse::<SslMode>()?),
            _ => root_cert = Some(value),
        }
    }
    // Errors of the URL parser name the option, never its value.
    let mut pg =
        tokio_postgres::Config::from_str(&rest).map_err(|e| DbError::Config(e.to_string()))?;
    let verify = match (mode, root_cert.is_some()) {
        (Some(SslMode::Require), true) => Verify::Chain,
        (Some(SslMode::Prefer | SslMode::Require), _) => Verify::Nothing,
        (Some(SslMode::VerifyCa), _) => Verify::Chain,
        (Some(SslMode::VerifyFull), _) => Verify::ChainAndName,
        (Some(SslMode::Disable) | None, _) => {
            pg.ssl_mode(PgSslMode::Disable);
            return Ok(ConnectConfig {
                pg,
                tls: None,
                mode,
            });
        }
    };
    pg.ssl_mode(if mode == Some(SslMode::Prefer) {
        PgSslMode::Prefer
    } else {
        PgSslMode::Require
    });
    let config = client_config(verify, root_cert.as_deref())?;
    Ok(ConnectConfig {
        pg,
        tls: Some(MakeRustlsConnect::new(config)),
        mode,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verify {
    Nothing,
    Chain,
    ChainAndName,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(verify: Verify, root_cert: Option<&str>) -> Result<ClientConfig, DbError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| DbError::Config(format!("TLS: {e}")))?;
    let config = match verify {
        Verify::Nothing => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        Verify::Chain | Verify::ChainAndName => {
            let roots = Arc::new(roots(root_cert)?);
            let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
                .build()
                .map_err(|e| DbError::Config(format!("TLS roots: {e}")))?;
            if verify == Verify::ChainAndName {
                builder.with_webpki_verifier(webpki).with_no_client_auth()
            } else {
                builder
                    .dangerous()
                    .with_custom_certificate_verifier(Arc::new(ChainOnly(webpki)))
                    .with_no_client_auth()
            }
        }
    };
    Ok(config)
}

/// Trusted roots: the PEM file `sslrootcert` names, or the system store.
fn roots(root_cert: Option<&str>) -> Result<RootCertStore, DbError> {
    let mut store = RootCertStore::empty();
    match root_cert {
        Some(path) if path != "system" => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| DbError::Config(format!("sslrootcert {path}: {e}")))?;
            let (added, _) = store.add_parsable_certificates(certs);
            if added == 0 {
                return Err(DbError::Config(format!(
                    "sslrootcert {path}: no usable certificate"
                )));
            }
        }
        _ => {
            let found = rustls_native_certs::load_native_certs();
            store.add_parsable_certificates(found.certs);
            if store.is_empty() {
                return Err(DbError::Config(
                    "sslmode needs trusted roots: none in the system store; set sslrootcert".into(),
                ));
            }
        }
    }
    Ok(store)
}

/// `prefer`/`require`: encrypted, but any certificate is accepted (as libpq does). The
/// handshake signatures are still checked, so the channel is bound to the certificate sent.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
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
        verify_tls12_signature(
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
        verify_tls13_signature(
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

/// `verify-ca`: the chain must lead to a trusted root; the name is not compared. webpki
/// checks the chain before the name, so a name mismatch means the chain was good.
#[derive(Debug)]
struct ChainOnly(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for ChainOnly {
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

/// Removes the parameters named in `keys` from a connection string and returns the rest
/// (byte for byte otherwise) with the removed `(key, value)` pairs, values decoded.
fn take_params(s: &str, keys: &[&str]) -> Result<(String, Vec<(String, String)>), DbError> {
    if s.starts_with("postgres://") || s.starts_with("postgresql://") {
        Ok(take_url_params(s, keys))
    } else {
        take_kv_params(s, keys)
    }
}

fn take_url_params(s: &str, keys: &[&str]) -> (String, Vec<(String, String)>) {
    let Some((base, query)) = s.split_once('?') else {
        return (s.to_string(), Vec::new());
    };
    let mut kept = Vec::new();
    let mut taken = Vec::new();
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        let key = percent_decode(k);
        if keys.contains(&key.as_str()) {
            taken.push((key, percent_decode(v)));
        } else {
            kept.push(part);
        }
    }
    let rest = if kept.is_empty() {
        base.to_string()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    (rest, taken)
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (bytes[i], bytes.get(i + 1), bytes.get(i + 2)) {
            (b'%', Some(&h), Some(&l)) if hex(h).is_some() && hex(l).is_some() => {
                let v = hex(h).unwrap_or(0) * 16 + hex(l).unwrap_or(0);
                out.push(v as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// libpq's `key = value` form: values may be single-quoted with backslash escapes.
fn take_kv_params(s: &str, keys: &[&str]) -> Result<(String, Vec<(String, String)>), DbError> {
    let bad = || DbError::Config("malformed connection string".into());
    let chars: Vec<(usize, char)> = s.char_indices().collect();
    let mut rest = String::with_capacity(s.len());
    let mut taken = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        while i < chars.len() && chars[i].1.is_whitespace() {
            i += 1;
        }
        if i >= chars.len() {
            break;
        }
        let start = chars[i].0;
        let mut key = String::new();
        while i < chars.len() && chars[i].1 != '=' && !chars[i].1.is_whitespace() {
            key.push(chars[i].1);
            i += 1;
        }
        while i < chars.len() && chars[i].1.is_whitespace() {
            i += 1;
        }
        if i >= chars.len() || chars[i].1 != '=' {
            return Err(bad());
        }
        i += 1;
        while i < chars.len() && chars[i].1.is_whitespace() {
            i += 1;
        }
        let mut value = String::new();
        if i < chars.len() && chars[i].1 == '\'' {
            i += 1;
            loop {
                match chars.get(i).map(|c| c.1) {
                    None => return Err(bad()),
                    Some('\'') => {
                        i += 1;
                        break;
                    }
                    Some('\\') => {
                        value.push(chars.get(i + 1).ok_or_else(bad)?.1);
                        i += 2;
                    }
                    Some(c) => {
                        value.push(c);
                        i += 1;
                    }
                }
            }
        } else {
            while i < chars.len() && !chars[i].1.is_whitespace() {
                value.push(chars[i].1);
                i += 1;
            }
        }
        let end = chars.get(i).map_or(s.len(), |c| c.0);
        if keys.contains(&key.as_str()) {
            taken.push((key, value));
        } else {
            if !rest.is_empty() {
                rest.push(' ');
            }
            rest.push_str(&s[start..end]);
        }
    }
    Ok((rest, taken))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unset_and_disable_stay_plain() {
        for url in [
            "postgres://u:p@db.example:5432/app",
            "postgres://u@db.example/app?sslmode=disable",
            "host=db.example user=u",
            "host=db.example sslmode=disable user=u",
        ] {
            let c = parse(url).unwrap();
            assert!(c.tls.is_none(), "{url}");
            assert_eq!(c.pg.get_ssl_mode(), PgSslMode::Disable, "{url}");
        }
    }

    #[test]
    fn modes_map_to_tls_settings() {
        let c = parse("postgres://u@db.example/app?sslmode=require&application_name=x").unwrap();
        assert!(c.tls.is_some());
        assert_eq!(c.mode, Some(SslMode::Require));
        assert_eq!(c.pg.get_ssl_mode(), PgSslMode::Require);
        assert_eq!(c.pg.get_application_name(), Some("x"));
        let c = parse("postgres://u@db.example/app?sslmode=prefer").unwrap();
        assert_eq!(c.pg.get_ssl_mode(), PgSslMode::Prefer);
        let c = parse("host=db.example sslmode = 'verify-full' user=u").unwrap();
        assert_eq!(c.mode, Some(SslMode::VerifyFull));
        assert_eq!(c.pg.get_ssl_mode(), PgSslMode::Require);
        assert_eq!(c.pg.get_user(), Some("u"));
        let c = parse("postgresql://u@db.example/app?sslmode=verify-ca").unwrap();
        assert_eq!(c.mode, Some(SslMode::VerifyCa));
        assert!(parse("postgres://u@db.example/app?sslmode=sometimes").is_err());
    }

    #[test]
    fn sslrootcert_is_read_and_must_exist() {
        let err = parse("postgres://u@h/app?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem")
            .unwrap_err();
        assert!(err.to_string().contains("sslrootcert"), "{err}");
        // require with a root file checks the chain, as libpq does.
        let err = parse("postgres://u@h/app?sslmode=require&sslrootcert=%2Fnonexistent%2Fca.pem")
            .unwrap_err();
        assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    }

    #[test]
    fn other_parameters_pass_through_unchanged() {
        let (rest, taken) = take_params(
            "postgres://u:p%40ss@h:5/db?options=-c%20x%3Dy&sslmode=require&connect_timeout=2",
            &["sslmode", "sslrootcert"],
        )
        .unwrap();
        assert_eq!(
            rest,
            "postgres://u:p%40ss@h:5/db?options=-c%20x%3Dy&connect_timeout=2"
        );
        assert_eq!(taken, vec![("sslmode".into(), "require".into())]);
        let (rest, taken) = take_params(
            "host=h password='a b\\' sslmode=x' sslrootcert='/p q/ca.pem' dbname=d",
            &["sslmode", "sslrootcert"],
        )
        .unwrap();
        assert_eq!(rest, "host=h password='a b\\' sslmode=x' dbname=d");
        assert_eq!(taken, vec![("sslrootcert".into(), "/p q/ca.pem".into())]);
        assert!(take_params("host=h broken", &["sslmode"]).is_err());
    }
}

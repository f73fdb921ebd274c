//! TLS to PostgreSQL: when a connection uses it, which roots verify the server, and the
//! rustls connector (aws-lc-rs provider).
//!
//! TLS is on when the URL asks for it (`sslmode=require`, `verify-ca` or `verify-full`) or
//! `SWITCHBOARD_DB_TLS=1`. When it is on, the server's certificate chain **and host name**
//! are always verified (libpq's `verify-full`): Switchboard never negotiates unverified
//! TLS. The roots are the PEM file of `sslrootcert=<path>` in the URL, else
//! `SWITCHBOARD_DB_CA_FILE` (the RDS CA bundle in AWS), else the system's roots
//! (`sslrootcert=system` asks for those explicitly). Without any of that — a local or test
//! PostgreSQL — connections stay plain, as before; `sslmode=disable`, `allow` and `prefer`
//! mean plain too.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio_rustls::rustls::pki_types::CertificateDer;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::{ClientConfig, RootCertStore};

use super::DbError;
use crate::config::DbTlsSettings;

/// Which certificates verify the server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TrustRoots {
    /// The operating system's store (`rustls-native-certs`).
    System,
    /// Only the certificates of this PEM file.
    File(PathBuf),
}

/// How one connection is made: its parsed configuration and, when TLS is on, the roots.
#[derive(Debug)]
pub struct ConnectPlan {
    pub config: tokio_postgres::Config,
    /// `None`: plain TCP.
    pub tls: Option<TrustRoots>,
}

/// The libpq `sslmode` values and what each means here.
fn sslmode_wants_tls(mode: &str) -> Result<bool, DbError> {
    match mode {
        "disable" | "allow" | "prefer" => Ok(false),
        "require" | "verify-ca" | "verify-full" => Ok(true),
        _ => Err(DbError::InvalidUrl(
            "sslmode must be disable, allow, prefer, require, verify-ca or verify-full".into(),
        )),
    }
}

/// Parses `url` and decides on TLS. `sslmode` and `sslrootcert` are taken out of a URL's
/// query (tokio-postgres knows neither `verify-full` nor `sslrootcert`); the key-value
/// form (`host=... sslmode=require`) is passed through as it is. Errors never quote the
/// URL (it may hold a password).
pub fn plan(url: &str, settings: &DbTlsSettings) -> Result<ConnectPlan, DbError> {
    let (rest, sslmode, sslrootcert) = take_tls_params(url)?;
    let mut config: tokio_postgres::Config = rest.parse().map_err(|_| {
        DbError::InvalidUrl("expected postgres://user[:password]@host[:port]/database".into())
    })?;
    let url_wants_tls = match &sslmode {
        Some(mode) => sslmode_wants_tls(mode)?,
        // Key-value form: tokio-postgres parsed its sslmode itself.
        None => config.get_ssl_mode() == tokio_postgres::config::SslMode::Require,
    };
    if !(settings.force || url_wants_tls) {
        config.ssl_mode(tokio_postgres::config::SslMode::Disable);
        return Ok(ConnectPlan { config, tls: None });
    }
    config.ssl_mode(tokio_postgres::config::SslMode::Require);
    let roots = match sslrootcert.as_deref() {
        Some("system") => TrustRoots::System,
        Some(path) => TrustRoots::File(PathBuf::from(path)),
        None => match &settings.ca_file {
            Some(path) => TrustRoots::File(path.clone()),
            None => TrustRoots::System,
        },
    };
    Ok(ConnectPlan {
        config,
        tls: Some(roots),
    })
}

/// Splits `sslmode` and `sslrootcert` off a `postgres://` / `postgresql://` URL's query.
fn take_tls_params(url: &str) -> Result<(String, Option<String>, Option<String>), DbError> {
    let is_url = url.starts_with("postgres://") || url.starts_with("postgresql://");
    let Some((base, query)) = url.split_once('?').filter(|_| is_url) else {
        return Ok((url.to_owned(), None, None));
    };
    let (mut sslmode, mut sslrootcert) = (None, None);
    let mut kept = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "sslmode" => sslmode = Some(percent_decode(value)?),
            "sslrootcert" => sslrootcert = Some(percent_decode(value)?),
            _ => kept.push(pair),
        }
    }
    let rest = if kept.is_empty() {
        base.to_owned()
    } else {
        format!("{base}?{}", kept.join("&"))
    };
    Ok((rest, sslmode, sslrootcert))
}

fn percent_decode(value: &str) -> Result<String, DbError> {
    let bad = || DbError::InvalidUrl("a query parameter has a bad percent-encoding".into());
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = bytes.get(i + 1..i + 3).ok_or_else(bad)?;
                let hex = std::str::from_utf8(hex).map_err(|_| bad())?;
                out.push(u8::from_str_radix(hex, 16).map_err(|_| bad())?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| bad())
}

/// The rustls client configuration for `roots` (TLS 1.2 and 1.3, aws-lc-rs).
pub fn client_config(roots: &TrustRoots) -> Result<ClientConfig, DbError> {
    let store = match roots {
        TrustRoots::File(path) => roots_from_file(path)?,
        TrustRoots::System => system_roots()?,
    };
    ClientConfig::builder_with_provider(Arc::new(
        tokio_rustls::rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| DbError::Tls(format!("cannot set up TLS: {e}")))
    .map(|builder| builder.with_root_certificates(store).with_no_client_auth())
}

/// The connector handed to the pool.
pub fn connector(roots: &TrustRoots) -> Result<postgres_rustls::MakeTlsConnector, DbError> {
    let config = client_config(roots)?;
    Ok(postgres_rustls::MakeTlsConnector::new(
        tokio_rustls::TlsConnector::from(Arc::new(config)),
    ))
}

fn roots_from_file(path: &Path) -> Result<RootCertStore, DbError> {
    let shown = path.display();
    let bytes = std::fs::read(path).map_err(|e| {
        DbError::Tls(format!(
            "cannot read the database CA file {shown} (SWITCHBOARD_DB_CA_FILE or sslrootcert): {e}"
        ))
    })?;
    let mut store = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&bytes) {
        let cert = cert.map_err(|e| {
            DbError::Tls(format!(
                "the database CA file {shown} is not valid PEM: {e}"
            ))
        })?;
        store.add(cert).map_err(|e| {
            DbError::Tls(format!(
                "the database CA file {shown} holds a certificate rustls cannot use: {e}"
            ))
        })?;
    }
    if store.is_empty() {
        return Err(DbError::Tls(format!(
            "the database CA file {shown} holds no certificate"
        )));
    }
    Ok(store)
}

fn system_roots() -> Result<RootCertStore, DbError> {
    let found = rustls_native_certs::load_native_certs();
    let mut store = RootCertStore::empty();
    let (added, _ignored) = store.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(DbError::Tls(
            "TLS to the database is on but no system CA certificate was found; set SWITCHBOARD_DB_CA_FILE to a PEM bundle (the RDS CA bundle in AWS)".into(),
        ));
    }
    Ok(store)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use tokio_postgres::config::SslMode;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<DbTlsSettings, crate::config::ConfigError> {
        let map: HashMap<&str, &str> = vars.iter().copied().collect();
        let lookup = |k: &str| map.get(k).map(|v| v.to_string());
        DbTlsSettings::from_env(&crate::config::Env::new(&lookup))
    }

    const URL: &str = "postgres://app:pw@db.example.com:5432/switchboard";

    #[test]
    fn settings_come_from_two_variables() {
        assert_eq!(settings(&[]).unwrap(), DbTlsSettings::default());
        let s = settings(&[
            ("SWITCHBOARD_DB_TLS", "1"),
            ("SWITCHBOARD_DB_CA_FILE", "/opt/switchboard/db-ca.pem"),
        ])
        .unwrap();
        assert!(s.force);
        assert_eq!(
            s.ca_file.as_deref(),
            Some(Path::new("/opt/switchboard/db-ca.pem"))
        );
        assert!(!settings(&[("SWITCHBOARD_DB_TLS", "off")]).unwrap().force);
        let e = settings(&[("SWITCHBOARD_DB_TLS", "sometimes")]).unwrap_err();
        assert_eq!(e.variable, "SWITCHBOARD_DB_TLS");
    }

    #[test]
    fn plain_by_default_and_for_the_non_verifying_modes() {
        for url in [
            URL.to_owned(),
            format!("{URL}?sslmode=disable"),
            format!("{URL}?sslmode=prefer"),
            format!("{URL}?sslmode=allow&application_name=x"),
            "host=localhost user=postgres dbname=x".to_owned(),
        ] {
            let p = plan(&url, &DbTlsSettings::default()).unwrap();
            assert_eq!(p.tls, None, "{url}");
            assert_eq!(p.config.get_ssl_mode(), SslMode::Disable, "{url}");
        }
    }

    #[test]
    fn the_url_can_ask_for_tls() {
        for mode in ["require", "verify-ca", "verify-full"] {
            let p = plan(&format!("{URL}?sslmode={mode}"), &DbTlsSettings::default()).unwrap();
            assert_eq!(p.tls, Some(TrustRoots::System), "{mode}");
            assert_eq!(p.config.get_ssl_mode(), SslMode::Require);
            assert_eq!(p.config.get_dbname(), Some("switchboard"));
        }
        // Key-value form: tokio-postgres's own sslmode.
        let p = plan(
            "host=db user=app sslmode=require",
            &DbTlsSettings::default(),
        )
        .unwrap();
        assert_eq!(p.tls, Some(TrustRoots::System));
    }

    #[test]
    fn the_variable_forces_tls_and_names_the_roots() {
        let forced = DbTlsSettings {
            force: true,
            ca_file: Some(PathBuf::from("/opt/ca.pem")),
        };
        let p = plan(URL, &forced).unwrap();
        assert_eq!(p.tls, Some(TrustRoots::File(PathBuf::from("/opt/ca.pem"))));
        assert_eq!(p.config.get_ssl_mode(), SslMode::Require);
        // Forced even against the URL's own choice.
        let p = plan(&format!("{URL}?sslmode=disable"), &forced).unwrap();
        assert!(p.tls.is_some());
        // The CA file alone does not turn TLS on.
        let ca_only = DbTlsSettings {
            force: false,
            ca_file: Some(PathBuf::from("/opt/ca.pem")),
        };
        assert_eq!(plan(URL, &ca_only).unwrap().tls, None);
        assert_eq!(
            plan(&format!("{URL}?sslmode=verify-full"), &ca_only)
                .unwrap()
                .tls,
            Some(TrustRoots::File(PathBuf::from("/opt/ca.pem")))
        );
    }

    #[test]
    fn sslrootcert_in_the_url_wins_and_is_removed() {
        let forced = DbTlsSettings {
            force: true,
            ca_file: Some(PathBuf::from("/opt/ca.pem")),
        };
        let p = plan(
            &format!(
                "{URL}?sslrootcert=%2Ftmp%2Fmy%20ca.pem&connect_timeout=7&sslmode=verify-full"
            ),
            &forced,
        )
        .unwrap();
        assert_eq!(
            p.tls,
            Some(TrustRoots::File(PathBuf::from("/tmp/my ca.pem")))
        );
        assert_eq!(
            p.config.get_connect_timeout(),
            Some(&std::time::Duration::from_secs(7))
        );
        let p = plan(
            &format!("{URL}?sslmode=require&sslrootcert=system"),
            &forced,
        )
        .unwrap();
        assert_eq!(p.tls, Some(TrustRoots::System));
    }

    #[test]
    fn bad_values_are_refused_without_echoing_the_url() {
        for url in [
            format!("{URL}?sslmode=always"),
            format!("{URL}?sslrootcert=%zz"),
            "postgres://app:hunter2@db.example.com:notaport/x".to_owned(),
        ] {
            let e = plan(&url, &DbTlsSettings::default()).unwrap_err();
            assert!(!e.to_string().contains("hunter2"), "{e}");
            assert!(!e.to_string().contains("pw@"), "{e}");
        }
    }

    #[test]
    fn ca_files_must_hold_certificates() {
        let dir = std::env::temp_dir().join(format!("sb-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.pem");
        let e = client_config(&TrustRoots::File(missing.clone())).unwrap_err();
        assert!(e.to_string().contains("missing.pem"), "{e}");
        let empty = dir.join("empty.pem");
        std::fs::write(&empty, "no certificates here\n").unwrap();
        let e = client_config(&TrustRoots::File(empty)).unwrap_err();
        assert!(e.to_string().contains("no certificate"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

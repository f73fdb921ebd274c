//! TLS to PostgreSQL against a real server with `ssl = on`: a throwaway cluster (the
//! embedded one of `switchboard serve`) with a certificate from a test CA made by the
//! `openssl` command. Verified connections succeed (URL `sslmode=verify-full` +
//! `sslrootcert`, or `SWITCHBOARD_DB_TLS=1` + `SWITCHBOARD_DB_CA_FILE`); another CA or a
//! host name the certificate does not name fail; plain connections still work.
//! Skipped with a message when `openssl` is not installed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use switchboard::embedded_pg::EmbeddedPostgres;
use switchboard_core::config::DbTlsSettings;
use switchboard_core::db::connect_pool_with;
use switchboard_core::secret::Secret;

fn openssl(dir: &Path, args: &[&str]) {
    let output = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A CA and a server certificate for `localhost` only (not 127.0.0.1), plus another CA.
fn make_certificates(dir: &Path) {
    for ca in ["ca", "other-ca"] {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "2",
                "-keyout",
                &format!("{ca}.key"),
                "-out",
                &format!("{ca}.pem"),
                "-subj",
                &format!("/CN=switchboard test {ca}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=localhost",
        ],
    );
    std::fs::write(
        dir.join("server.ext"),
        "subjectAltName=DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    );
}

async fn ssl_in_use(url: &str, settings: &DbTlsSettings) -> Result<bool, String> {
    let pool = connect_pool_with(&Secret::new(url), 1, settings).map_err(|e| e.to_string())?;
    let client = pool.get().await.map_err(|e| format!("{e:?}"))?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(row.get(0))
}

#[tokio::test]
async fn verified_tls_to_a_real_server() {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: the openssl command is not installed");
        return;
    }
    let root = std::env::temp_dir().join(format!("sb-db-tls-{}", std::process::id()));
    std::fs::create_dir_all(&root).unwrap();
    std::fs::set_permissions(&root, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let certs = root.join("certs");
    std::fs::create_dir_all(&certs).unwrap();
    make_certificates(&certs);

    let mut cluster = EmbeddedPostgres::start(&root, None).await.unwrap();
    // The server's certificate and key in its data directory, owned by the server's user.
    let data = cluster.data_dir().to_path_buf();
    let owner = std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(&data).unwrap());
    let group = std::os::unix::fs::MetadataExt::gid(&std::fs::metadata(&data).unwrap());
    for file in ["server.crt", "server.key"] {
        let target = data.join(file);
        std::fs::copy(certs.join(file), &target).unwrap();
        std::fs::set_permissions(&target, std::os::unix::fs::PermissionsExt::from_mode(0o600))
            .unwrap();
        std::os::unix::fs::chown(&target, Some(owner), Some(group)).unwrap();
    }
    let plain = cluster.database_url();
    let (client, connection) = tokio_postgres::connect(&plain, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    for statement in [
        "ALTER SYSTEM SET ssl = on",
        "ALTER SYSTEM SET ssl_cert_file = 'server.crt'",
        "ALTER SYSTEM SET ssl_key_file = 'server.key'",
        "SELECT pg_reload_conf()",
    ] {
        client.batch_execute(statement).await.unwrap();
    }
    drop(client);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let port = cluster.port();
    let ca: PathBuf = certs.join("ca.pem");
    let localhost = format!("postgres://postgres@localhost:{port}/switchboard");
    let none = DbTlsSettings::default();

    // Plain, as before, when nothing asks for TLS.
    assert_eq!(ssl_in_use(&plain, &none).await, Ok(false));
    // The URL asks (libpq parameters), verified against its own CA file.
    let verified = format!(
        "{localhost}?sslmode=verify-full&sslrootcert={}",
        ca.display()
    );
    assert_eq!(ssl_in_use(&verified, &none).await, Ok(true));
    // The deployment's way: SWITCHBOARD_DB_TLS=1 and SWITCHBOARD_DB_CA_FILE.
    let forced = DbTlsSettings {
        force: true,
        ca_file: Some(ca.clone()),
    };
    assert_eq!(ssl_in_use(&localhost, &forced).await, Ok(true));
    // Another CA: refused.
    let other = DbTlsSettings {
        force: true,
        ca_file: Some(certs.join("other-ca.pem")),
    };
    let error = ssl_in_use(&localhost, &other).await.unwrap_err();
    assert!(error.to_lowercase().contains("certificate"), "{error}");
    // The right CA but a host name the certificate does not name: refused (verify-full).
    let by_ip = format!("postgres://postgres@127.0.0.1:{port}/switchboard");
    assert!(ssl_in_use(&by_ip, &forced).await.is_err());
    // System roots do not know the test CA.
    let system = format!("{localhost}?sslmode=require");
    assert!(ssl_in_use(&system, &none).await.is_err());

    cluster.stop().unwrap();
    let _ = std::fs::remove_dir_all(&root);
}

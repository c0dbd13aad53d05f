//! `sslmode` for real: a private PostgreSQL cluster with `ssl=on` and a certificate made
//! here by a throwaway CA, on a free loopback port; the pool and the single connection
//! reach it with each mode, and the server's `pg_stat_ssl` says whether TLS was used.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use perpetuo_core::db;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};

struct Cluster {
    dir: PathBuf,
    pg_ctl: PathBuf,
    port: u16,
}

fn pg_bin(name: &str) -> PathBuf {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path().join("bin").join(name))
        .filter(|p| p.is_file())
        .collect();
    found.sort();
    found.pop().unwrap_or_else(|| PathBuf::from(name))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// PostgreSQL refuses to run as root: run its tools as `postgres` then.
fn as_pg(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn run(mut cmd: Command) {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Cluster {
    fn start(cert_pem: &str, key_pem: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("perpetuo-pgtls-{}", uuid::Uuid::now_v7()));
        let data = dir.join("data");
        let sock = dir.join("sock");
        std::fs::create_dir_all(&sock).unwrap();
        std::fs::write(dir.join("server.crt"), cert_pem).unwrap();
        std::fs::write(dir.join("server.key"), key_pem).unwrap();
        if is_root() {
            let mut chown = Command::new("chown");
            chown.args(["-R", "postgres:"]).arg(&dir);
            run(chown);
        }
        let mut chmod = Command::new("chmod");
        chmod.arg("600").arg(dir.join("server.key"));
        run(chmod);
        let mut initdb = as_pg(&pg_bin("initdb"));
        initdb.arg("-D").arg(&data).args([
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ]);
        run(initdb);
        let port = free_port();
        let cluster = Cluster {
            pg_ctl: pg_bin("pg_ctl"),
            dir: dir.clone(),
            port,
        };
        let opts = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c ssl=on \
             -c ssl_cert_file={} -c ssl_key_file={}",
            sock.display(),
            dir.join("server.crt").display(),
            dir.join("server.key").display()
        );
        let mut start = as_pg(&cluster.pg_ctl);
        start
            .arg("-D")
            .arg(&data)
            .arg("-l")
            .arg(dir.join("postgres.log"))
            .args(["-w", "-t", "30", "-o", &opts, "start"]);
        run(start);
        cluster
    }

    fn url(&self, host: &str, params: &str) -> String {
        format!("postgres://postgres@{host}:{}/postgres?{params}", self.port)
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let mut stop = as_pg(&self.pg_ctl);
        stop.arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "immediate", "stop"]);
        let _ = stop.output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct Pki {
    ca_pem: String,
    server_cert: String,
    server_key: String,
}

fn ca() -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(DnType::CommonName, "perpetuo test CA");
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

/// A CA and a server certificate it signed, valid for the name `localhost` only.
fn pki() -> Pki {
    let ca = ca();
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["localhost".to_string()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "localhost");
    let cert = params.signed_by(&key, &ca).unwrap();
    Pki {
        ca_pem: ca.pem(),
        server_cert: cert.pem(),
        server_key: key.serialize_pem(),
    }
}

/// Whether the pool's connection uses TLS, as the server sees it.
async fn pool_ssl(url: &str) -> Result<bool, db::DbError> {
    let pool = db::pool(url, 1)?;
    let client = pool.get().await?;
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await?;
    Ok(row.get(0))
}

#[tokio::test]
async fn sslmode_is_honoured_against_a_tls_server() {
    let pki = pki();
    let cluster = Cluster::start(&pki.server_cert, &pki.server_key);
    let ca_file = cluster.dir.join("ca.pem");
    std::fs::write(&ca_file, &pki.ca_pem).unwrap();
    let other_ca_file = cluster.dir.join("other-ca.pem");
    std::fs::write(&other_ca_file, ca().pem()).unwrap();
    let (ca_file, other_ca) = (ca_file.display(), other_ca_file.display());

    // Unset and disable: plain TCP, as before.
    assert!(!pool_ssl(&cluster.url("127.0.0.1", "")).await.unwrap());
    assert!(!pool_ssl(&cluster.url("127.0.0.1", "sslmode=disable"))
        .await
        .unwrap());
    // prefer and require: TLS, certificate not checked.
    assert!(pool_ssl(&cluster.url("127.0.0.1", "sslmode=prefer"))
        .await
        .unwrap());
    assert!(pool_ssl(&cluster.url("127.0.0.1", "sslmode=require"))
        .await
        .unwrap());
    // verify-full: the chain and the name.
    assert!(pool_ssl(&cluster.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca_file}")
    ))
    .await
    .unwrap());
    assert!(
        pool_ssl(&cluster.url(
            "127.0.0.1",
            &format!("sslmode=verify-full&sslrootcert={ca_file}")
        ))
        .await
        .is_err(),
        "the certificate does not name 127.0.0.1"
    );
    assert!(pool_ssl(&cluster.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={other_ca}")
    ))
    .await
    .is_err());
    // verify-ca: the chain only.
    assert!(pool_ssl(&cluster.url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={ca_file}")
    ))
    .await
    .unwrap());
    assert!(pool_ssl(&cluster.url(
        "127.0.0.1",
        &format!("sslmode=verify-ca&sslrootcert={other_ca}")
    ))
    .await
    .is_err());
    // require with a root file checks the chain, as libpq does.
    assert!(pool_ssl(&cluster.url(
        "127.0.0.1",
        &format!("sslmode=require&sslrootcert={other_ca}")
    ))
    .await
    .is_err());

    // The single connection (the gateway's LISTEN) follows the same rules.
    let url = cluster.url(
        "localhost",
        &format!("sslmode=verify-full&sslrootcert={ca_file}"),
    );
    let (client, mut conn) = db::connect(&url).await.unwrap();
    let driver = tokio::spawn(async move {
        std::future::poll_fn(|cx| loop {
            match conn.poll_message(cx) {
                std::task::Poll::Ready(Some(Ok(_))) => continue,
                std::task::Poll::Ready(_) => return std::task::Poll::Ready(()),
                std::task::Poll::Pending => return std::task::Poll::Pending,
            }
        })
        .await
    });
    let row = client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0));
    drop(client);
    let _ = driver.await;
}

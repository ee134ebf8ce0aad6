//! `attestation-server backup --to FILE` (DESIGN.md §7).

use std::os::unix::fs::OpenOptionsExt as _;
use std::process::ExitCode;

use attest_server::config::Config;
use attest_server::store::redb::RedbRegistry;

/// `attestation-server backup --to FILE`: a logical copy from one read transaction. With
/// the service stopped the file is read directly; while it runs (it holds the file) the
/// service makes the copy (`GET /api/v1/backup`, with `ITL_ADMIN_TOKEN`). Either way the
/// copy's audit chain is verified before it is put at FILE.
pub fn backup(config: &Config, to: &std::path::Path) -> ExitCode {
    let fail = |what: String| {
        eprintln!("attestation-server: backup: {what}");
        ExitCode::FAILURE
    };
    if to.exists() {
        return fail(format!("{} exists: choose a new file", to.display()));
    }
    let from = config.database_path();
    let partial = to.with_extension("partial");
    let _ = std::fs::remove_file(&partial);
    let source = match RedbRegistry::backup_file(&from, &partial) {
        Ok(Some(_)) => from.display().to_string(),
        Ok(None) => match backup_from_service(config, &partial) {
            Ok(url) => url,
            Err(e) => return fail(e),
        },
        Err(e) => return fail(e.to_string()),
    };
    // The checkpoints' signatures are checked with the response key when it is there.
    let key = config
        .data_dir
        .join(attest_server::responsekey::FILE_NAME)
        .exists()
        .then(|| attest_server::responsekey::load_or_create(&config.data_dir).ok())
        .flatten()
        .map(|(k, _)| *k.verifying_key());
    let verified = match RedbRegistry::audit_verify_file_with(&partial, key.as_ref()) {
        Ok(v) if v.valid => v,
        Ok(v) => {
            return fail(format!(
                "the copy's audit chain does not verify (first bad seq {:?}: {}); left at {}",
                v.first_invalid_id,
                v.error.unwrap_or_default(),
                partial.display()
            ));
        }
        Err(e) => return fail(format!("cannot read the copy {}: {e}", partial.display())),
    };
    let machines = match RedbRegistry::machines_in_file(&partial) {
        Ok(m) => m,
        Err(e) => return fail(format!("cannot read the copy {}: {e}", partial.display())),
    };
    if let Err(e) = std::fs::rename(&partial, to) {
        return fail(format!("cannot put the copy at {}: {e}", to.display()));
    }
    println!(
        "backup: {machines} machines, {} audit entries (chain valid, root {}) from {source} to {}",
        verified.entries,
        verified.root_hash,
        to.display()
    );
    ExitCode::SUCCESS
}

/// Asks the running service for a copy and writes it to `partial`; answers the URL used.
fn backup_from_service(config: &Config, partial: &std::path::Path) -> Result<String, String> {
    if let Some(tls) = &config.tls {
        return backup_over_tls(config, tls, partial);
    }
    let base = match &config.service_url {
        Some(u) => u.clone(),
        None if config.listen.ip().is_unspecified() => {
            format!("http://127.0.0.1:{}", config.listen.port())
        }
        None => format!("http://{}", config.listen),
    };
    let Some(token) = &config.admin_token else {
        return Err(format!(
            "{} is held by the running service; set ITL_ADMIN_TOKEN so that the service makes the copy",
            config.database_path().display()
        ));
    };
    let url = format!("{base}/api/v1/backup");
    let mut res = attest_server::outbound::agent(std::time::Duration::from_secs(600))
        .get(&url)
        .header("authorization", format!("Bearer {token}"))
        .call()
        .map_err(|e| format!("{url}: {e}"))?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(partial)
        .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
    std::io::copy(&mut res.body_mut().as_reader(), &mut file)
        .and_then(|_| file.sync_all())
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(url)
}

/// How long a copy through the service may take.
const BACKUP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(600);

/// The same over the service's own TLS: straight to the address it listens on (loopback
/// when it listens on all), trusting exactly the certificate `ITL_TLS_CERT` names, whatever
/// name that certificate is for (`attest_server::tls::self_client`, as the warm-up).
fn backup_over_tls(
    config: &Config,
    tls: &attest_server::tls::TlsSettings,
    partial: &std::path::Path,
) -> Result<String, String> {
    use http_body_util::BodyExt as _;
    use std::io::Write as _;
    let Some(token) = &config.admin_token else {
        return Err(format!(
            "{} is held by the running service; set ITL_ADMIN_TOKEN so that the service makes the copy",
            config.database_path().display()
        ));
    };
    let leaf = attest_server::tls::served_leaf(tls).map_err(|e| e.to_string())?;
    let mut addr = config.listen;
    if addr.port() == 0 {
        return Err(format!(
            "{} is held by the running service, and ITL_LISTEN ({addr}) does not say its port: \
             set ITL_LISTEN as the service has it",
            config.database_path().display()
        ));
    }
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let url = format!("https://{addr}/api/v1/backup");
    let client = attest_server::tls::self_client(&tls.policy, leaf);
    let fetch = async {
        let tcp = smol::net::TcpStream::connect(addr)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let stream = futures_rustls::TlsConnector::from(client)
            .connect(attest_server::tls::self_name(addr), tcp)
            .await
            .map_err(|e| format!("{url}: TLS: {e}"))?;
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(smol_hyper::rt::FuturesIo::new(stream))
                .await
                .map_err(|e| format!("{url}: {e}"))?;
        let driver = smol::spawn(connection);
        let request = hyper::Request::get("/api/v1/backup")
            .header("host", addr.to_string())
            .header("authorization", format!("Bearer {token}"))
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .map_err(|e| format!("{url}: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = response.status();
        let mut body = response.into_body();
        if status != hyper::StatusCode::OK {
            let text = body
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            return Err(format!(
                "{url}: {status}: {}",
                text.chars().take(300).collect::<String>()
            ));
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(partial)
            .map_err(|e| format!("cannot create {}: {e}", partial.display()))?;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("{url}: {e}"))?;
            if let Ok(data) = frame.into_data() {
                file.write_all(&data)
                    .map_err(|e| format!("{}: {e}", partial.display()))?;
            }
        }
        file.sync_all()
            .map_err(|e| format!("{}: {e}", partial.display()))?;
        drop(sender);
        let _ = driver.await;
        Ok(url.clone())
    };
    smol::block_on(futures_lite::future::or(fetch, async {
        smol::Timer::after(BACKUP_TIMEOUT).await;
        Err(format!(
            "{url}: no complete answer in {} s",
            BACKUP_TIMEOUT.as_secs()
        ))
    }))
}

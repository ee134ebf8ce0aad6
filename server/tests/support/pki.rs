//! A throw-away PKI made with the `openssl` command: a CA and server certificates for
//! `localhost` and 127.0.0.1, for tests of the server's TLS. Shared by the server's tests
//! and the CLI's (`#[path]`).

#![allow(dead_code)]

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and one server certificate it signed.
pub struct Pki {
    /// The CA certificate (PEM): what a client trusts.
    pub ca: PathBuf,
    /// The server's certificate chain (PEM, leaf only).
    pub cert: PathBuf,
    /// The server's private key (PEM, mode 0600).
    pub key: PathBuf,
}

fn openssl(dir: &Path, args: &[&str]) {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl is installed (ci/setup.sh)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A CA (P-384) in `dir` and a server certificate with an EC key on `curve` (`P-384`,
/// `P-256`), for `localhost` and 127.0.0.1, as `<name>.pem` and `<name>.key`.
pub fn make(dir: &Path, name: &str, curve: &str) -> Pki {
    std::fs::create_dir_all(dir).unwrap();
    let ca = dir.join("ca.pem");
    if !ca.exists() {
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-384",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-sha384",
                "-subj",
                "/CN=ITL test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
    }
    std::fs::write(
        dir.join(format!("{name}.ext")),
        "subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
         keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    let (key, csr, pem, ext) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.pem"),
        format!("{name}.ext"),
    );
    openssl(
        dir,
        &[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            &format!("ec_paramgen_curve:{curve}"),
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            "/CN=localhost",
        ],
    );
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            "7",
            "-days",
            "2",
            "-sha384",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ],
    );
    let key = dir.join(key);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    Pki {
        ca,
        cert: dir.join(pem),
        key,
    }
}

impl Pki {
    /// The server's environment for TLS with this certificate.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ITL_TLS_CERT", self.cert.to_str().unwrap().to_owned()),
            ("ITL_TLS_KEY", self.key.to_str().unwrap().to_owned()),
        ]
    }
}

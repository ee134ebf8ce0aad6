//! What an operator's `cargo install --path server/cli` compiles: never the server, its
//! database or aws-lc-rs (aws-lc is a large C library: minutes of build for nothing the CLI
//! uses). `cargo tree` resolves attest-cli's dependencies and features alone, as `cargo
//! install` and `cargo build -p attest-cli` do (the workspace's other members, which
//! select aws-lc-rs for rustls, are not unified into them), for every target platform and
//! with build dependencies; dev-dependencies are left out, as `cargo install` leaves them.

use std::process::Command;

/// Crates that must not be in the CLI's build.
const BANNED: &[&str] = &[
    "attest-server",
    "redb",
    "aws-lc-rs",
    "aws-lc-sys",
    "aws-lc-fips-sys",
    "tide",
    "jsonwebtoken",
];

fn tree(args: &[&str]) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(&cargo)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["tree", "--locked", "-p", "attest-cli", "--target", "all"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cargo} tree: {e}"));
    assert!(
        out.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn the_cli_builds_without_the_server_redb_or_aws_lc() {
    let listing = tree(&["-e", "normal,build", "--prefix", "none"]);
    let crates: std::collections::BTreeSet<&str> = listing
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    // The listing is the CLI's own: its views, HTTP client and TLS provider are there.
    for expected in ["attest-cli", "attest-api", "ureq", "rustls", "ring"] {
        assert!(crates.contains(expected), "{expected} missing: {crates:?}");
    }
    let found: Vec<&&str> = BANNED.iter().filter(|b| crates.contains(**b)).collect();
    assert!(
        found.is_empty(),
        "the operator CLI would compile {found:?}; the dependency paths:\n{}",
        found
            .iter()
            .map(|b| tree(&["-e", "normal,build", "-i", b]))
            .collect::<String>()
    );
    // rustls is built with ring only: no feature of it names aws-lc.
    let features = tree(&[
        "-e",
        "normal,build,features",
        "-i",
        "rustls",
        "--prefix",
        "none",
    ]);
    assert!(
        !features.contains("aws_lc") && !features.contains("aws-lc"),
        "{features}"
    );
}

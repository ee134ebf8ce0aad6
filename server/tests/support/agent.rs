//! The host agent binary driven as an operator's machine would run it, and a man in the
//! middle for the attacks (`push.rs`, `trust.rs`).

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use attest_swtpm::Swtpm;
use serde_json::Value;

use super::{ADMIN, Server, agent_bin};

pub struct Out {
    pub code: i32,
    pub kv: HashMap<String, String>,
    pub stderr: String,
}

/// The agent binary for one machine: its TPM, its state directory, one server.
pub struct AgentCli {
    pub tcti: String,
    pub state: PathBuf,
    pub server: String,
}

impl AgentCli {
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(agent_bin());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("TPM2TOOLS_TCTI", &self.tcti)
            .env("ATTEST_AGENT_STATE_DIR", &self.state)
            .env("ATTEST_AGENT_SERVER", &self.server)
            // The test server speaks plain HTTP on loopback.
            .env("ATTEST_AGENT_ALLOW_PLAIN_HTTP", "true")
            .args(args);
        let config = self.state.with_extension("toml");
        if config.exists() {
            cmd.env("ATTEST_AGENT_CONFIG", config);
        }
        cmd
    }

    pub fn run(&self, args: &[&str]) -> Out {
        let out = self.command(args).output().expect("run attest-agent");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        Out {
            code: out.status.code().unwrap_or(-1),
            kv: stdout
                .lines()
                .filter_map(|l| l.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    pub fn ok(&self, args: &[&str]) -> HashMap<String, String> {
        let out = self.run(args);
        assert_eq!(out.code, 0, "attest-agent {args:?}: {}", out.stderr);
        out.kv
    }
}

pub fn agent(swtpm: &Swtpm, server: &str, dir: &Path, name: &str) -> AgentCli {
    let a = AgentCli {
        tcti: swtpm.tcti(),
        state: dir.join(name),
        server: server.to_owned(),
    };
    // Hooks come from the agent's TOML file, as in production.
    std::fs::write(
        a.state.with_extension("toml"),
        format!(
            "[hooks]\napply_config = \"cat > '{d}/{name}-applied.yaml'\"\nlock = \"touch '{d}/{name}-locked'\"\nwipe = \"touch '{d}/{name}-wiped'\"\n",
            d = dir.display()
        ),
    )
    .unwrap();
    a
}

pub fn machine(server: &Server, id: &str) -> Value {
    let (status, m) = server.call("GET", &format!("/api/v1/machines/{id}"), Some(ADMIN), None);
    assert_eq!(status, 200, "{m}");
    m
}

pub fn approve(server: &Server, id: &str, role: &str, host: &str) {
    let body = format!(r#"{{"role":"{role}","hostname":"{host}","assigned_ip":"10.0.0.21/24"}}"#);
    let (status, m) = server.call(
        "POST",
        &format!("/api/v1/machines/{id}/approve"),
        Some(ADMIN),
        Some(&body),
    );
    assert_eq!(status, 200, "{m}");
}

/// A man in the middle: forwards every request to `upstream` and passes each answer's body
/// through `rewrite(path, body)` on its way back.
pub fn tampering_proxy(upstream: String, rewrite: fn(&str, String) -> String) -> String {
    super::mitm::start(
        upstream,
        super::mitm::Mitm::Answers(std::sync::Arc::new(move |path: &str, body: Vec<u8>| {
            rewrite(path, String::from_utf8(body).unwrap()).into_bytes()
        })),
    )
}

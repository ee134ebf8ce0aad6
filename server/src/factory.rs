//! ISO URLs for `/register` and offline bundles, from the Talos Image Factory.
//!
//! A machine's ISO boots with `talos.config=<its config URL>` on the kernel command line, so
//! each machine has its own schematic: `POST {factory}/schematics` with the customization
//! YAML answers a content-addressed id (the same YAML gives the same id), and the ISO is
//! `{factory}/image/<id>/<version>/metal-amd64.iso`. `ITL_ISO_URL` replaces all of that
//! with one fixed URL (a mirror, an air-gapped site). The factory being down must not leave
//! a half-registered machine behind, so callers ask before they write anything.

use std::time::Duration;

/// Where ISO URLs come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IsoSource {
    /// `ITL_ISO_URL`: the same URL for every machine.
    Fixed(String),
    /// `ITL_FACTORY_URL` (+ `ITL_TALOS_VERSION`, `ITL_FACTORY_EXTENSIONS`).
    Factory {
        url: String,
        talos_version: String,
        extensions: Vec<String>,
        timeout: Duration,
    },
}

/// The factory could not give an ISO URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FactoryError(pub String);

impl std::fmt::Display for FactoryError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Largest factory answer read.
const MAX_ANSWER: u64 = 64 * 1024;

/// The schematic YAML for a machine whose config is at `config_url`.
pub fn schematic(config_url: &str, extensions: &[String]) -> String {
    // Quoted scalars: URLs and extension names are plain ASCII without quotes (checked
    // where they come from), so this is valid YAML and stable byte for byte.
    let mut yaml = String::from("customization:\n  extraKernelArgs:\n");
    yaml.push_str(&format!("    - \"talos.config={config_url}\"\n"));
    if !extensions.is_empty() {
        yaml.push_str("  systemExtensions:\n    officialExtensions:\n");
        for e in extensions {
            yaml.push_str(&format!("      - \"{e}\"\n"));
        }
    }
    yaml
}

impl IsoSource {
    /// The ISO URL for a machine whose config is at `config_url`.
    pub fn iso_url(&self, config_url: &str) -> Result<String, FactoryError> {
        let (url, talos_version, extensions, timeout) = match self {
            IsoSource::Fixed(u) => return Ok(u.clone()),
            IsoSource::Factory {
                url,
                talos_version,
                extensions,
                timeout,
            } => (url, talos_version, extensions, *timeout),
        };
        let endpoint = format!("{url}/schematics");
        let down = |why: String| FactoryError(format!("Image Factory {endpoint}: {why}"));
        let mut answer = crate::outbound::agent(timeout)
            .post(&endpoint)
            .header("content-type", "application/yaml")
            .send(schematic(config_url, extensions).as_bytes())
            .map_err(|e| down(e.to_string()))?;
        #[derive(serde::Deserialize)]
        struct Created {
            id: String,
        }
        let created: Created = answer
            .body_mut()
            .with_config()
            .limit(MAX_ANSWER)
            .read_json()
            .map_err(|e| down(format!("unexpected answer: {e}")))?;
        let id = created.id;
        if id.is_empty() || id.len() > 128 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(down(format!("unexpected schematic id '{id}'")));
        }
        Ok(format!("{url}/image/{id}/{talos_version}/metal-amd64.iso"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schematic_names_the_config_url_and_extensions() {
        let y = schematic(
            "https://a.example/api/v1/config/t0k",
            &[
                "siderolabs/intel-ucode".into(),
                "siderolabs/iscsi-tools".into(),
            ],
        );
        assert_eq!(
            y,
            "customization:\n  extraKernelArgs:\n    - \"talos.config=https://a.example/api/v1/config/t0k\"\n  systemExtensions:\n    officialExtensions:\n      - \"siderolabs/intel-ucode\"\n      - \"siderolabs/iscsi-tools\"\n"
        );
        let parsed: serde_json::Value = serde_norway::from_str(&y).unwrap();
        assert_eq!(
            parsed["customization"]["systemExtensions"]["officialExtensions"][1],
            "siderolabs/iscsi-tools"
        );
        assert!(!schematic("u", &[]).contains("systemExtensions"));
    }

    #[test]
    fn fixed_url_needs_no_factory_and_a_closed_port_is_an_error() {
        assert_eq!(
            IsoSource::Fixed("https://m/iso".into())
                .iso_url("x")
                .unwrap(),
            "https://m/iso"
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let e = IsoSource::Factory {
            url: format!("http://127.0.0.1:{port}"),
            talos_version: "v1.9.5".into(),
            extensions: vec![],
            timeout: Duration::from_secs(2),
        }
        .iso_url("http://s/api/v1/config/t")
        .unwrap_err();
        assert!(e.0.starts_with("Image Factory http://127.0.0.1:"), "{e}");
    }
}

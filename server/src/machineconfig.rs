//! Talos MachineConfig rendering: a role's base config plus the machine's hostname and
//! static address; and its non-secret fields (an allowlist) for machines not yet entitled
//! to the rest.
//!
//! Base configs are read from `ITL_CONFIG_DIR` (`controlplane.yaml`, `worker-infra.yaml`,
//! `worker-app.yaml`) at start-up, so a missing or unparsable file stops the server instead
//! of failing the first machine that asks.

use std::collections::HashMap;
use std::path::Path;

use attest_common::wire::Role;
use serde_json::{Value, json};

/// The fields of a v1alpha1 config a machine may see before its TPM proof (DESIGN.md §3.9),
/// as paths (`*`: any key or array element); each names a whole subtree. Everything else is
/// left out: a secret a base config carries in a field not listed here (a registry
/// password, a WireGuard key, a proxy's credentials in the environment, an inline manifest)
/// is never served without the proof, where a list of secrets to delete would miss it.
const PUBLIC: &[&str] = &[
    "/version",
    "/debug",
    "/persist",
    "/machine/type",
    "/machine/install/disk",
    "/machine/install/diskSelector",
    "/machine/install/image",
    "/machine/install/wipe",
    "/machine/network/hostname",
    "/machine/network/nameservers",
    "/machine/network/interfaces/*/interface",
    "/machine/network/interfaces/*/deviceSelector",
    "/machine/network/interfaces/*/addresses",
    "/machine/network/interfaces/*/routes",
    "/machine/network/interfaces/*/dhcp",
    "/machine/network/interfaces/*/mtu",
    "/machine/network/kubespan/enabled",
    "/machine/time",
    "/machine/ca/crt",
    "/machine/kubelet/image",
    "/machine/kubelet/clusterDNS",
    "/machine/kubelet/nodeIP",
    "/machine/features",
    "/machine/sysctls",
    "/machine/systemDiskEncryption/*/provider",
    "/machine/systemDiskEncryption/*/cipher",
    "/machine/systemDiskEncryption/*/blockSize",
    "/machine/systemDiskEncryption/*/keys/*/slot",
    "/machine/systemDiskEncryption/*/keys/*/tpm",
    "/machine/systemDiskEncryption/*/keys/*/nodeID",
    "/cluster/clusterName",
    "/cluster/controlPlane/endpoint",
    "/cluster/network",
    "/cluster/discovery/enabled",
    "/cluster/apiServer/certSANs",
    "/cluster/ca/crt",
    "/cluster/aggregatorCA/crt",
    "/cluster/etcd/ca/crt",
];

/// The parts of `value` under the paths `patterns` (each a list of segments, `*` any);
/// `None` when nothing is.
fn pick(value: &Value, patterns: &[Vec<&str>]) -> Option<Value> {
    if patterns.iter().any(Vec::is_empty) {
        return Some(value.clone());
    }
    let below = |key: &str| -> Vec<Vec<&str>> {
        patterns
            .iter()
            .filter(|p| p[0] == key || p[0] == "*")
            .map(|p| p[1..].to_vec())
            .collect()
    };
    match value {
        Value::Object(map) => {
            let out: serde_json::Map<String, Value> = map
                .iter()
                .filter_map(|(k, v)| {
                    let sub = below(k);
                    (!sub.is_empty())
                        .then(|| pick(v, &sub))
                        .flatten()
                        .map(|v| (k.clone(), v))
                })
                .collect();
            (!out.is_empty()).then_some(Value::Object(out))
        }
        Value::Array(items) => {
            let sub = below("*");
            if sub.is_empty() {
                return None;
            }
            let out: Vec<Value> = items.iter().filter_map(|v| pick(v, &sub)).collect();
            (!out.is_empty()).then_some(Value::Array(out))
        }
        _ => None,
    }
}

/// The role base configs.
#[derive(Debug, Clone)]
pub struct BaseConfigs {
    by_role: HashMap<Role, Value>,
}

impl BaseConfigs {
    /// Loads `<role>.yaml` for every role from `dir`.
    pub fn load(dir: &Path) -> Result<BaseConfigs, String> {
        let mut by_role = HashMap::new();
        for role in Role::ALL {
            let path = dir.join(format!("{role}.yaml"));
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
            let value: Value = serde_norway::from_str(&text)
                .map_err(|e| format!("{} is not YAML: {e}", path.display()))?;
            if value.get("version").and_then(Value::as_str) != Some("v1alpha1") {
                return Err(format!(
                    "{} is not a Talos v1alpha1 machine config",
                    path.display()
                ));
            }
            by_role.insert(role, value);
        }
        Ok(BaseConfigs { by_role })
    }

    /// The role's base config as loaded.
    pub fn base(&self, role: Role) -> &Value {
        &self.by_role[&role]
    }

    /// The full config for a machine (with secrets).
    pub fn render(&self, role: Role, hostname: &str, address: &str) -> Value {
        let mut config = self.base(role).clone();
        let network = &mut config["machine"]["network"];
        if !network.is_object() {
            *network = json!({});
        }
        network["hostname"] = json!(hostname);
        network["interfaces"] = json!([{
            "deviceSelector": { "physical": true },
            "addresses": [address],
            "dhcp": false,
        }]);
        config
    }

    /// The config's non-secret fields only ([`PUBLIC`]): what a machine may see before its
    /// TPM proof.
    pub fn public(config: &Value) -> Value {
        let patterns: Vec<Vec<&str>> = PUBLIC
            .iter()
            .map(|p| p.trim_start_matches('/').split('/').collect())
            .collect();
        pick(config, &patterns).unwrap_or_else(|| json!({}))
    }

    /// YAML text of a config.
    pub fn to_yaml(config: &Value) -> String {
        serde_norway::to_string(config).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Value {
        let text = include_str!("../../../shared/talos/controlplane.yaml");
        serde_norway::from_str(text).unwrap()
    }

    #[test]
    fn only_listed_fields_are_public() {
        let mut config = sample();
        // Secrets in places a deny-list would not know about.
        config["machine"]["registries"]["config"]["r.example"]["auth"] =
            json!({"username": "u", "password": "registry-password"});
        config["machine"]["network"]["interfaces"] = json!([{
            "interface": "wg0",
            "addresses": ["10.9.0.1/24"],
            "wireguard": {"privateKey": "wireguard-private-key"},
        }]);
        config["machine"]["env"]["https_proxy"] = json!("http://user:proxy-password@proxy:3128");
        config["cluster"]["inlineManifests"] = json!([{"name": "m", "contents": "inline-secret"}]);
        let public = BaseConfigs::public(&config);
        let text = serde_json::to_string(&public).unwrap();
        for secret in [
            "registry-password",
            "wireguard-private-key",
            "proxy-password",
            "inline-secret",
        ] {
            assert!(!text.contains(secret), "{secret} leaked");
        }
        for pointer in [
            "/machine/token",
            "/machine/ca/key",
            "/cluster/token",
            "/cluster/secret",
            "/cluster/ca/key",
            "/cluster/id",
            "/cluster/aescbcEncryptionSecret",
            "/cluster/serviceAccount/key",
            "/cluster/etcd/ca/key",
            "/cluster/aggregatorCA/key",
        ] {
            assert!(public.pointer(pointer).is_none(), "{pointer} leaked");
        }
        // What a waiting machine needs is there.
        assert_eq!(public["version"], "v1alpha1");
        assert_eq!(
            public["machine"]["network"]["interfaces"][0]["interface"],
            "wg0"
        );
        assert!(public.pointer("/cluster/controlPlane/endpoint").is_some());
        assert!(public.pointer("/machine/install/disk").is_some());
        assert!(public.pointer("/cluster/ca/crt").is_some());
    }

    /// Every leaf of the public config is the same leaf of the full one.
    #[test]
    fn the_public_config_is_part_of_the_full_one() {
        fn leaves(v: &Value, at: String, out: &mut Vec<(String, Value)>) {
            match v {
                Value::Object(m) => m
                    .iter()
                    .for_each(|(k, x)| leaves(x, format!("{at}/{k}"), out)),
                Value::Array(_) => out.push((at, v.clone())),
                _ => out.push((at, v.clone())),
            }
        }
        let config = sample();
        let mut public = Vec::new();
        leaves(&BaseConfigs::public(&config), String::new(), &mut public);
        assert!(public.len() > 10);
        for (pointer, value) in public {
            if !value.is_array() {
                assert_eq!(config.pointer(&pointer), Some(&value), "{pointer}");
            }
        }
    }
}

//! Talos MachineConfig rendering: a role's base config plus the machine's hostname and
//! static address; and the same without secrets for machines not yet entitled to them.
//!
//! Base configs are read from `ITL_CONFIG_DIR` (`controlplane.yaml`, `worker-infra.yaml`,
//! `worker-app.yaml`) at start-up, so a missing or unparsable file stops the server instead
//! of failing the first machine that asks.

use std::collections::HashMap;
use std::path::Path;

use attest_common::wire::Role;
use serde_json::{Value, json};

/// Fields that hold secrets in a v1alpha1 config (JSON pointers).
const SECRETS: &[&str] = &[
    "/machine/token",
    "/machine/ca/key",
    "/cluster/token",
    "/cluster/secret",
    "/cluster/secretboxEncryptionSecret",
    "/cluster/aescbcEncryptionSecret",
    "/cluster/ca/key",
    "/cluster/aggregatorCA/key",
    "/cluster/serviceAccount/key",
    "/cluster/etcd/ca/key",
];

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

    /// The config with every secret removed: what a machine may see before its TPM proof.
    pub fn without_secrets(mut config: Value) -> Value {
        for pointer in SECRETS {
            let (parent, key) = pointer.rsplit_once('/').unwrap_or(("", pointer));
            if let Some(Value::Object(map)) = config.pointer_mut(parent) {
                map.remove(key);
            }
        }
        config
    }

    /// YAML text of a config.
    pub fn to_yaml(config: &Value) -> String {
        serde_norway::to_string(config).unwrap_or_default()
    }
}

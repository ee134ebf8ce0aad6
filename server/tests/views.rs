//! `attest-api`'s views against the OpenAPI document the server serves
//! (`GET /api/v1/openapi.json`, `src/openapi.rs`): sample instances of every view, and the
//! server's real answers, validate against the matching component schema; each view has
//! exactly the properties its schema lists; and every real answer reads into its view and
//! writes back unchanged (so the view loses nothing the server sends).

mod support;

use std::collections::BTreeSet;

use attest_api::{
    Approval, ApprovalList, ApprovePending, AuditCheckpoint, AuditEntry, AuditPage,
    AuditVerification, EkSource, ErrorBody, Health, Hex, Machine, MachineDetail, MachineList,
    OfflineBundle, PendingStatus, Role, Status, Timestamp, VoteState, Whoami,
};
use base64ct::Encoding;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use support::{ADMIN, Server};

const EK_P384: &str = include_str!("../../common/tests/fixtures/swtpm-ek-p384.pem");
const EK_RSA: &str = include_str!("../../common/tests/fixtures/swtpm-ek-rsa2048.pem");

/// OpenAPI 3.0 schemas as JSON Schema: `nullable: true` becomes "or null".
fn json_schema(v: Value) -> Value {
    match v {
        Value::Object(mut map) => {
            let nullable = map.remove("nullable") == Some(json!(true));
            let map: serde_json::Map<String, Value> =
                map.into_iter().map(|(k, v)| (k, json_schema(v))).collect();
            if nullable {
                json!({"anyOf": [Value::Object(map), {"type": "null"}]})
            } else {
                Value::Object(map)
            }
        }
        Value::Array(items) => Value::Array(items.into_iter().map(json_schema).collect()),
        other => other,
    }
}

struct Document {
    /// The document's `components`, as JSON Schema.
    components: Value,
}

impl Document {
    fn served_by(server: &Server) -> Document {
        let (status, doc) = server.call("GET", "/api/v1/openapi.json", None, None);
        assert_eq!(status, 200, "{doc}");
        Document {
            components: json_schema(doc["components"].clone()),
        }
    }

    /// The property names of component `name` (through `allOf` and `$ref`).
    fn properties(&self, schema: &Value) -> BTreeSet<String> {
        if let Some(r) = schema["$ref"].as_str() {
            let name = r.trim_start_matches("#/components/schemas/");
            return self.properties(&self.components["schemas"][name]);
        }
        let mut out: BTreeSet<String> = schema["properties"]
            .as_object()
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default();
        for part in schema["allOf"].as_array().into_iter().flatten() {
            out.extend(self.properties(part));
        }
        out
    }

    /// What is wrong with `instance` for component `name` (formats checked too).
    fn errors(&self, name: &str, instance: &Value) -> Vec<String> {
        let root = json!({
            "$ref": format!("#/components/schemas/{name}"),
            "components": self.components,
        });
        let validator = jsonschema::draft202012::options()
            .should_validate_formats(true)
            .build(&root)
            .unwrap_or_else(|e| panic!("schema {name}: {e}"));
        validator
            .iter_errors(instance)
            .map(|e| format!("{e} at {}", e.instance_path()))
            .collect()
    }

    /// `instance` is valid for component `name` and has exactly its properties (an array:
    /// each element those of its items' component).
    fn check(&self, name: &str, instance: &Value) {
        let schema = &self.components["schemas"][name];
        assert!(schema.is_object(), "the document has no schema {name}");
        let errors = self.errors(name, instance);
        assert!(
            errors.is_empty(),
            "{name} does not validate: {errors:#?}\n{instance:#}"
        );
        if schema["type"] == "array" {
            let items = schema["items"]["$ref"]
                .as_str()
                .expect("items by reference");
            let items = items.trim_start_matches("#/components/schemas/");
            let elements = instance
                .as_array()
                .unwrap_or_else(|| panic!("{name} is not an array"));
            for element in elements {
                self.check(items, element);
            }
            return;
        }
        let sent: BTreeSet<String> = instance
            .as_object()
            .unwrap_or_else(|| panic!("{name} is not an object: {instance}"))
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            sent,
            self.properties(schema),
            "{name}: the view's fields (left) and the schema's properties (right)"
        );
    }

    /// A view's sample instance.
    fn sample(&self, name: &str, view: &impl Serialize) {
        self.check(name, &serde_json::to_value(view).unwrap());
    }

    /// A real answer: valid for the schema, and read into the view and written back
    /// unchanged.
    fn answer<T: Serialize + DeserializeOwned>(&self, name: &str, answer: &Value) -> T {
        self.check(name, answer);
        let view: T = serde_json::from_value(answer.clone())
            .unwrap_or_else(|e| panic!("{name} does not read into its view: {e}\n{answer:#}"));
        assert_eq!(
            &serde_json::to_value(&view).unwrap(),
            answer,
            "{name}: the view does not write back what the server sent"
        );
        view
    }
}

fn machine(complete: bool) -> Machine {
    let some = |s: &str| complete.then(|| s.to_owned());
    Machine {
        machine_id: "m-1".into(),
        ek_fingerprint: "ab".repeat(48),
        ek_source: if complete {
            EkSource::Cert
        } else {
            EkSource::Pub
        },
        status: if complete {
            Status::Attested
        } else {
            Status::PendingApproval
        },
        wipe_pending: complete,
        role: complete.then_some(Role::Controlplane),
        hostname: some("cp-1"),
        assigned_ip: some("10.0.0.5/24"),
        desired_role: complete.then_some(Role::WorkerInfra),
        cluster_id: "default".into(),
        hw_uuid: some("4c4c4544-0042"),
        hw_mac: some("52:54:00:12:34:56"),
        hw_serial: some("SN-1"),
        hw_product: some("Edge 7"),
        created_at: Timestamp(1_700_000_000),
        updated_at: Timestamp(1_700_000_060),
        last_attested_at: complete.then_some(Timestamp(1_700_000_120)),
        stale: complete,
        pcr_baseline_pinned: complete,
        tpm_proven: complete,
        tpm_clock: complete.then(|| attest_api::TpmClock {
            reset_count: 5,
            restart_count: 0,
            clock_ms: 123_456,
            safe: true,
            firmware_version: "0001000200030004".into(),
        }),
        ek_chain: if complete {
            attest_api::EkChain::Verified {
                by: "Infineon OPTIGA(TM) RSA Root CA".into(),
            }
        } else {
            attest_api::EkChain::Unverified {
                reason: "no trusted issuer".into(),
            }
        },
    }
}

fn vote(state: VoteState) -> Approval {
    Approval {
        state,
        operator: "alice".into(),
        role: Role::WorkerApp,
        hostname: "edge-1".into(),
        assigned_ip: "10.0.1.1/24".into(),
        at: Timestamp(1_700_000_030),
    }
}

fn entry(first: bool) -> AuditEntry {
    AuditEntry {
        seq: 1,
        timestamp: 1_700_000_000,
        operator_cn: "SYSTEM".into(),
        action: "approve".into(),
        machine_id: (!first).then(|| "m-1".into()),
        prev_state: (!first).then(|| "pending_approval".into()),
        new_state: (!first).then(|| "registered".into()),
        detail: String::new(),
        source_ip: (!first).then(|| "127.0.0.1".into()),
        prev_hash: Hex([0; 48]),
        entry_hash: Hex([0x5a; 48]),
    }
}

fn checkpoint() -> AuditCheckpoint {
    AuditCheckpoint {
        seq: 20,
        entry_hash: Hex([0xab; 48]),
        timestamp: 1_700_000_000,
        signature: attest_api::NonceSignature([0x5a; 96]),
    }
}

#[test]
fn every_view_matches_its_schema() {
    let server = Server::start();
    let doc = Document::served_by(&server);
    for complete in [true, false] {
        doc.sample("Machine", &machine(complete));
    }
    doc.sample(
        "MachineDetail",
        &MachineDetail {
            machine: machine(true),
            approvals: vec![vote(VoteState::Approved), vote(VoteState::Pending)],
        },
    );
    doc.sample(
        "MachineDetail",
        &MachineDetail {
            machine: machine(false),
            approvals: vec![],
        },
    );
    doc.sample("MachineList", &vec![machine(true), machine(false)]);
    doc.sample("Approval", &vote(VoteState::Pending));
    doc.sample(
        "ApprovalList",
        &ApprovalList {
            approvals: vec![vote(VoteState::Approved)],
        },
    );
    doc.sample(
        "ApprovePending",
        &ApprovePending {
            status: PendingStatus::PendingSecondApproval,
            approvals_received: 1,
            approvals_required: 3,
            expires_at: Timestamp(1_700_000_600),
        },
    );
    for first in [true, false] {
        doc.sample("AuditEntry", &entry(first));
    }
    doc.sample("AuditPage", &vec![entry(true), entry(false)]);
    doc.sample(
        "AuditVerification",
        &AuditVerification {
            valid: true,
            entries: 0,
            root_hash: "0".repeat(96),
            first_invalid_id: None,
            error: None,
            checkpoints: 0,
            latest_checkpoint: None,
        },
    );
    doc.sample(
        "AuditVerification",
        &AuditVerification {
            valid: true,
            entries: 20,
            root_hash: "ab".repeat(48),
            first_invalid_id: None,
            error: None,
            checkpoints: 4,
            latest_checkpoint: Some(checkpoint()),
        },
    );
    doc.sample(
        "AuditVerification",
        &AuditVerification {
            valid: false,
            entries: 3,
            root_hash: "ab".repeat(48),
            first_invalid_id: Some(3),
            error: Some("entry 3 was modified (hash mismatch)".into()),
            checkpoints: 0,
            latest_checkpoint: None,
        },
    );
    doc.sample("AuditCheckpoint", &checkpoint());
    doc.sample(
        "Error",
        &ErrorBody {
            error: "not_found".into(),
            message: "no machine with id 'x'".into(),
        },
    );
    doc.sample(
        "Whoami",
        &Whoami {
            identity: "SYSTEM".into(),
            break_glass: true,
        },
    );
    doc.sample(
        "Health",
        &Health {
            status: "ok".into(),
            version: "0.1.0".into(),
        },
    );
    for iso in [Some("https://mirror.example/talos.iso".to_owned()), None] {
        doc.sample(
            "OfflineBundle",
            &OfflineBundle {
                machine_id: "m-1".into(),
                role: Role::WorkerApp,
                hostname: "edge-1".into(),
                iso_url: iso.clone(),
                config_token: "t".repeat(43),
                config_url: iso.map(|_| "http://127.0.0.1:8080/api/v1/config/t".into()),
                machineconfig: "version: v1alpha1\n".into(),
                enrollment_cert_pem: "-----BEGIN CERTIFICATE-----\n".into(),
                enrollment_cert_serial: "01".into(),
                enrollment_cert_not_after: Timestamp(1_800_000_000),
                enrollment_ca_pem: "-----BEGIN CERTIFICATE-----\n".into(),
                server_key_pem: "-----BEGIN PUBLIC KEY-----\n".into(),
            },
        );
    }
}

fn self_register(server: &Server, pem: &str, role: &str) -> String {
    let fp = attest_common::ek_fingerprint(pem.as_bytes())
        .unwrap()
        .fingerprint
        .to_string();
    let body = json!({
        "ek_fingerprint": fp,
        "ek_cert_pem": base64ct::Base64::encode_string(pem.as_bytes()),
        "hw_serial": "SN-1",
        "desired_role": role,
    });
    let (status, reg) = server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&body.to_string()),
    );
    assert_eq!(status, 201, "{reg}");
    reg["machine_id"].as_str().unwrap().to_owned()
}

#[test]
fn the_servers_answers_are_the_views() {
    let dir = tempfile::tempdir().unwrap();
    let configs = support::config_dir(dir.path());
    let server = Server::start_with(
        &dir.path().join("data"),
        &[
            ("ITL_ADMIN_TOKEN", ADMIN),
            ("ITL_DUAL_CONTROL_ROLES", "controlplane"),
            // The pending-approval view is made with the break-glass token's vote.
            ("ITL_DUAL_CONTROL_BREAK_GLASS", "true"),
            ("ITL_CONFIG_DIR", configs.to_str().unwrap()),
            (
                "ITL_ISO_URL",
                "https://mirror.example/talos/metal-amd64.iso",
            ),
        ],
    );
    let doc = Document::served_by(&server);
    let get = |path: &str| {
        let (status, body) = server.call("GET", path, Some(ADMIN), None);
        assert_eq!(status, 200, "GET {path}: {body}");
        body
    };
    let post = |path: &str, body: Value, want: u16| {
        let (status, answer) = server.call("POST", path, Some(ADMIN), Some(&body.to_string()));
        assert_eq!(status, want, "POST {path}: {answer}");
        answer
    };

    let (_, health) = server.call("GET", "/healthz", None, None);
    doc.answer::<Health>("Health", &health);
    let w: Whoami = doc.answer("Whoami", &get("/api/v1/whoami"));
    assert!(w.break_glass);

    // A machine approved at once (worker-app), one waiting for a second vote (controlplane).
    let a = self_register(&server, EK_P384, "worker-app");
    let b = self_register(&server, EK_RSA, "controlplane");
    doc.answer::<MachineList>("MachineList", &get("/api/v1/machines"));
    let approved: Machine = doc.answer(
        "Machine",
        &post(
            &format!("/api/v1/machines/{a}/approve"),
            json!({"role": "worker-app", "hostname": "edge-1", "assigned_ip": "10.0.1.1/24"}),
            200,
        ),
    );
    assert_eq!(approved.status, Status::Registered);
    let pending: ApprovePending = doc.answer(
        "ApprovePending",
        &post(
            &format!("/api/v1/machines/{b}/approve"),
            json!({"role": "controlplane", "hostname": "cp-1", "assigned_ip": "10.0.0.5/24"}),
            202,
        ),
    );
    assert_eq!(
        (pending.approvals_received, pending.approvals_required),
        (1, 2)
    );
    let list: MachineList = doc.answer("MachineList", &get("/api/v1/machines"));
    assert_eq!(list.len(), 2);
    doc.answer::<MachineList>("MachineList", &get("/api/v1/machines?status=attested"));
    for id in [&a, &b] {
        let detail: MachineDetail =
            doc.answer("MachineDetail", &get(&format!("/api/v1/machines/{id}")));
        assert_eq!(detail.approvals.len(), 1);
        doc.answer::<ApprovalList>(
            "ApprovalList",
            &get(&format!("/api/v1/machines/{id}/approvals")),
        );
    }
    let bundle: OfflineBundle = doc.answer(
        "OfflineBundle",
        &get(&format!("/api/v1/machines/{a}/offline-bundle")),
    );
    assert_eq!(bundle.role, Role::WorkerApp);
    doc.answer::<Machine>(
        "Machine",
        &post(
            &format!("/api/v1/machines/{b}/reject"),
            json!({"reason": "unknown hardware"}),
            200,
        ),
    );
    doc.answer::<Machine>(
        "Machine",
        &post(
            &format!("/api/v1/machines/{a}/revoke"),
            json!({"reason": "decommissioned", "wipe": true}),
            200,
        ),
    );

    let page: AuditPage = doc.answer("AuditPage", &get("/api/v1/audit?per_page=3"));
    assert_eq!(page.len(), 3);
    doc.answer::<AuditPage>("AuditPage", &get(&format!("/api/v1/audit?machine_id={a}")));
    let v: AuditVerification = doc.answer("AuditVerification", &get("/api/v1/audit/verify"));
    assert!(v.valid);
    let latest = v
        .latest_checkpoint
        .expect("the verification signs the head");
    assert_eq!(latest.seq, v.entries);
    let all = get("/api/v1/audit/checkpoints");
    let all = all.as_array().expect("a bare array");
    let last = all.last().expect("at least the verification's checkpoint");
    assert_eq!(
        doc.answer::<AuditCheckpoint>("AuditCheckpoint", last),
        latest
    );
    for c in all {
        doc.answer::<AuditCheckpoint>("AuditCheckpoint", c);
    }

    let (status, error) = server.call("GET", "/api/v1/machines/nope", Some(ADMIN), None);
    assert_eq!(status, 404);
    doc.answer::<ErrorBody>("Error", &error);
}

/// The schemas are not vacuous: a wrong type, value, format or a missing field fails.
#[test]
fn the_schemas_refuse_what_the_server_does_not_send() {
    let server = Server::start();
    let doc = Document::served_by(&server);
    let good = serde_json::to_value(machine(true)).unwrap();
    assert!(doc.errors("Machine", &good).is_empty());
    let wrong = |field: &str, value: Value| {
        let mut m = good.clone();
        match value {
            Value::Null if field == "stale" => {
                m.as_object_mut().unwrap().remove(field);
            }
            v => m[field] = v,
        }
        assert!(
            !doc.errors("Machine", &m).is_empty(),
            "{field} = {} passed",
            m[field]
        );
    };
    wrong("created_at", json!("yesterday"));
    wrong("created_at", json!(1_700_000_000));
    wrong("role", json!("worker-data"));
    wrong("status", json!("stale"));
    wrong("ek_fingerprint", json!("AB"));
    wrong("stale", Value::Null);
    wrong("hostname", json!(7));
    let mut detail = serde_json::to_value(MachineDetail {
        machine: machine(false),
        approvals: vec![vote(VoteState::Approved)],
    })
    .unwrap();
    detail["approvals"][0]["state"] = json!("maybe");
    assert!(!doc.errors("MachineDetail", &detail).is_empty());
    let mut pending = serde_json::to_value(ApprovePending {
        status: PendingStatus::PendingSecondApproval,
        approvals_received: 1,
        approvals_required: 2,
        expires_at: Timestamp(0),
    })
    .unwrap();
    pending["status"] = json!("approved");
    assert!(!doc.errors("ApprovePending", &pending).is_empty());
}

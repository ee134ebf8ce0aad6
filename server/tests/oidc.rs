//! Operator authentication with real signed JWTs (RS256 and ES384) verified against a JWKS
//! that the test serves over HTTP with a discovery document, as an OIDC provider does.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::{SystemTime, UNIX_EPOCH};

use attest_common::der;
use attest_swtpm::openssl;
use base64ct::{Base64UrlUnpadded, Encoding};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use support::{ADMIN, Server};

const EK_P384: &str = include_str!("../../common/tests/fixtures/swtpm-ek-p384.pem");
const AUDIENCE: &str = "attestation";
const ROLE: &str = "operator";

struct Key {
    kid: &'static str,
    alg: Algorithm,
    private_pem: Vec<u8>,
    public_pem: Vec<u8>,
    jwk: Value,
}

fn b64u(bytes: &[u8]) -> String {
    Base64UrlUnpadded::encode_string(bytes)
}

fn make_key(dir: &std::path::Path, kid: &'static str, alg: Algorithm) -> Key {
    let private = dir.join(format!("{kid}.pem"));
    let public_der = dir.join(format!("{kid}.pub.der"));
    let public_pem = dir.join(format!("{kid}.pub.pem"));
    let p = |x: &std::path::Path| x.to_str().unwrap().to_owned();
    let (algorithm, option) = match alg {
        Algorithm::RS256 => ("RSA", "rsa_keygen_bits:2048"),
        _ => ("EC", "ec_paramgen_curve:P-384"),
    };
    openssl(&[
        "genpkey",
        "-algorithm",
        algorithm,
        "-pkeyopt",
        option,
        "-out",
        &p(&private),
    ]);
    openssl(&[
        "pkey",
        "-in",
        &p(&private),
        "-pubout",
        "-outform",
        "der",
        "-out",
        &p(&public_der),
    ]);
    openssl(&[
        "pkey",
        "-in",
        &p(&private),
        "-pubout",
        "-out",
        &p(&public_pem),
    ]);
    let spki_bytes = std::fs::read(&public_der).unwrap();
    let spki = der::parse_spki(&spki_bytes).unwrap();
    let jwk = if alg == Algorithm::RS256 {
        let (seq, _) = der::expect(spki.key, der::SEQUENCE).unwrap();
        let (n, rest) = der::expect(seq.value, der::INTEGER).unwrap();
        let (e, _) = der::expect(rest, der::INTEGER).unwrap();
        let n = &n.value[n.value.iter().take_while(|b| **b == 0).count()..];
        json!({"kty": "RSA", "kid": kid, "use": "sig", "alg": "RS256", "n": b64u(n), "e": b64u(e.value)})
    } else {
        let (x, y) = spki.key[1..].split_at(48);
        json!({"kty": "EC", "kid": kid, "use": "sig", "crv": "P-384", "x": b64u(x), "y": b64u(y)})
    };
    Key {
        kid,
        alg,
        private_pem: std::fs::read(&private).unwrap(),
        public_pem: std::fs::read(&public_pem).unwrap(),
        jwk,
    }
}

/// Serves the discovery document and the JWKS on 127.0.0.1 until the test ends.
fn serve_provider(jwks: Value) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let discovery = json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")});
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                    break;
                }
            }
            let body = if line.contains("/.well-known/openid-configuration") {
                discovery.to_string()
            } else {
                jwks.to_string()
            };
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    issuer
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(key: &Key, claims: Value) -> String {
    let mut header = Header::new(key.alg);
    header.kid = Some(key.kid.into());
    let encoding = match key.alg {
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&key.private_pem).unwrap(),
        _ => EncodingKey::from_ec_pem(&key.private_pem).unwrap(),
    };
    encode(&header, &claims, &encoding).unwrap()
}

fn claims(issuer: &str, user: &str) -> Value {
    json!({
        "iss": issuer, "aud": AUDIENCE, "sub": format!("id-{user}"), "preferred_username": user,
        "exp": now() + 300, "iat": now(), "nbf": now() - 5,
        "realm_access": {"roles": [ROLE]},
    })
}

fn register_body() -> String {
    let fp = attest_common::ek_fingerprint(EK_P384.as_bytes())
        .unwrap()
        .fingerprint
        .to_string();
    json!({"ek_fingerprint": fp, "ek_cert_pem": base64ct::Base64::encode_string(EK_P384.as_bytes())}).to_string()
}

#[test]
fn jwt_validation_and_operator_identity() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = make_key(dir.path(), "rsa-1", Algorithm::RS256);
    let ec = make_key(dir.path(), "ec-1", Algorithm::ES384);
    let stranger = make_key(dir.path(), "not-in-jwks", Algorithm::ES384);
    let issuer = serve_provider(json!({"keys": [rsa.jwk, ec.jwk]}));
    let server = Server::start_with(
        dir.path(),
        &[
            ("ITL_OIDC_ENABLED", "true"),
            ("ITL_OIDC_ISSUER", &issuer),
            ("ITL_OIDC_AUDIENCE", AUDIENCE),
            ("ITL_OIDC_OPERATOR_ROLE", ROLE),
            ("ITL_ADMIN_TOKEN", ADMIN),
            ("ITL_DUAL_CONTROL_ROLES", "controlplane"),
        ],
    );
    let get = |t: &str| server.call("GET", "/api/v1/machines", Some(t), None);

    // Valid tokens: RS256 with a realm role; ES384 with a client role.
    assert_eq!(get(&token(&rsa, claims(&issuer, "alice"))).0, 200);
    let mut client_role = claims(&issuer, "bob");
    client_role["realm_access"] = json!({"roles": []});
    client_role["resource_access"] = json!({AUDIENCE: {"roles": [ROLE]}});
    assert_eq!(get(&token(&ec, client_role)).0, 200);

    // Every kind of bad token.
    let mut expired = claims(&issuer, "alice");
    expired["exp"] = json!(now() - 3600);
    let mut wrong_iss = claims(&issuer, "alice");
    wrong_iss["iss"] = json!("http://127.0.0.1:1");
    let mut wrong_aud = claims(&issuer, "alice");
    wrong_aud["aud"] = json!("someone-else");
    let mut not_yet = claims(&issuer, "alice");
    not_yet["nbf"] = json!(now() + 3600);
    let none_token = format!(
        "{}.{}.",
        b64u(
            json!({"alg": "none", "typ": "JWT", "kid": "rsa-1"})
                .to_string()
                .as_bytes()
        ),
        b64u(claims(&issuer, "alice").to_string().as_bytes())
    );
    let mut hs_header = Header::new(Algorithm::HS256);
    hs_header.kid = Some("rsa-1".into());
    let hs_with_public_key = encode(
        &hs_header,
        &claims(&issuer, "alice"),
        &EncodingKey::from_secret(&rsa.public_pem),
    )
    .unwrap();
    for (what, t) in [
        ("expired", token(&rsa, expired)),
        ("wrong issuer", token(&rsa, wrong_iss)),
        ("wrong audience", token(&ec, wrong_aud)),
        ("not yet valid", token(&ec, not_yet)),
        ("alg none", none_token),
        ("HS256 with the public key", hs_with_public_key),
        ("unknown key", token(&stranger, claims(&issuer, "alice"))),
        ("garbage", "not.a.token".into()),
    ] {
        let (status, err) = get(&t);
        assert_eq!(
            (status, err["error"].as_str()),
            (401, Some("invalid_token")),
            "{what}: {err}"
        );
    }
    let mut no_role = claims(&issuer, "carol");
    no_role["realm_access"] = json!({"roles": ["viewer"]});
    let (status, err) = get(&token(&rsa, no_role));
    assert_eq!(status, 403);
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("carol does not have the operator role 'operator'"),
        "{err}"
    );

    // Two users complete a dual-control approval; the audit names them, and SYSTEM.
    let (_, reg) = server.call(
        "POST",
        "/api/v1/self-register",
        None,
        Some(&register_body()),
    );
    let id = reg["machine_id"].as_str().unwrap().to_owned();
    let approve = json!({"role": "controlplane", "hostname": "cp-1", "assigned_ip": "10.0.0.5/24"})
        .to_string();
    let path = format!("/api/v1/machines/{id}/approve");
    let (status, _) = server.call(
        "POST",
        &path,
        Some(&token(&rsa, claims(&issuer, "alice"))),
        Some(&approve),
    );
    assert_eq!(status, 202);
    let (status, again) = server.call(
        "POST",
        &path,
        Some(&token(&ec, claims(&issuer, "alice"))),
        Some(&approve),
    );
    assert_eq!(
        (status, again["error"].as_str()),
        (409, Some("duplicate_approval")),
        "same identity, other key"
    );
    // Attack 9: the same subject without (or with another) preferred_username is still
    // the same person for dual control; (iss, sub) is what counts.
    let mut renamed = claims(&issuer, "alice");
    renamed["preferred_username"] = json!("alice-the-second");
    let mut nameless = claims(&issuer, "alice");
    nameless
        .as_object_mut()
        .unwrap()
        .remove("preferred_username");
    for (what, claims) in [("renamed", renamed), ("nameless", nameless)] {
        let (status, again) =
            server.call("POST", &path, Some(&token(&rsa, claims)), Some(&approve));
        assert_eq!(
            (status, again["error"].as_str()),
            (409, Some("duplicate_approval")),
            "{what}: {again}"
        );
    }
    // An OIDC user named SYSTEM is not the break-glass token.
    let mut impostor = claims(&issuer, "SYSTEM");
    impostor["sub"] = json!("id-mallory");
    let (status, me) = server.call("GET", "/api/v1/whoami", Some(&token(&rsa, impostor)), None);
    assert_eq!(status, 200);
    assert_eq!(
        (me["identity"].as_str(), me["break_glass"].as_bool()),
        (Some("oidc:id-mallory"), Some(false)),
        "{me}"
    );
    // The break-glass token does not count toward the quorum (ITL_DUAL_CONTROL_BREAK_GLASS).
    let (status, bg) = server.call("POST", &path, Some(ADMIN), Some(&approve));
    assert_eq!(
        (status, bg["error"].as_str()),
        (403, Some("break_glass_not_counted")),
        "{bg}"
    );
    let (status, m) = server.call(
        "POST",
        &path,
        Some(&token(&ec, claims(&issuer, "bob"))),
        Some(&approve),
    );
    assert_eq!((status, m["status"].as_str()), (200, Some("registered")));
    let (status, _) = server.call(
        "POST",
        &format!("/api/v1/machines/{id}/revoke"),
        Some(ADMIN),
        Some(r#"{"reason":"break-glass test"}"#),
    );
    assert_eq!(status, 200);
    let who = server.audit_column(&id, "operator_cn");
    assert_eq!(who, ["agent", "alice", "bob", "SYSTEM"]);
}

#[test]
fn provider_down_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let key = make_key(dir.path(), "rsa-1", Algorithm::RS256);
    // A port nobody listens on.
    let issuer = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", l.local_addr().unwrap())
    };
    let server = Server::start_with(
        dir.path(),
        &[
            ("ITL_OIDC_ENABLED", "true"),
            ("ITL_OIDC_ISSUER", &issuer),
            ("ITL_OIDC_AUDIENCE", AUDIENCE),
        ],
    );
    let (status, err) = server.call(
        "GET",
        "/api/v1/machines",
        Some(&token(&key, claims(&issuer, "alice"))),
        None,
    );
    assert_eq!(
        (status, err["error"].as_str()),
        (503, Some("oidc_unavailable")),
        "{err}"
    );
}

/// Issue 22: as the seed, `ITL_OIDC_ISSUER` alone turns operator login on, and a Keycloak
/// access token for client `attestation-service` is accepted as Keycloak issues it without
/// any mapper (`aud: account`, `azp: attestation-service`, the role under `realm_access` or
/// `resource_access.attestation-service`); a token for another client is not.
/// `ITL_OIDC_ENABLED=false` still turns it off.
#[test]
fn the_issuer_alone_enables_keycloak_login_for_attestation_service() {
    let dir = tempfile::tempdir().unwrap();
    let ec = make_key(dir.path(), "ec-kc", Algorithm::ES384);
    let issuer = serve_provider(json!({"keys": [ec.jwk]}));
    let keycloak = |azp: &str, realm_roles: Value, client_roles: Value| {
        json!({
            "iss": issuer, "aud": "account", "azp": azp, "sub": "id-kc", "preferred_username": "kc-user",
            "exp": now() + 300, "iat": now(), "nbf": now() - 5,
            "realm_access": {"roles": realm_roles},
            "resource_access": client_roles,
        })
    };
    let server = Server::start_with(
        dir.path(),
        &[
            ("ITL_OIDC_ISSUER", &issuer),
            ("ITL_OIDC_OPERATOR_ROLE", ROLE),
        ],
    );
    let get = |t: &str| server.call("GET", "/api/v1/machines", Some(t), None);
    let realm = token(
        &ec,
        keycloak("attestation-service", json!([ROLE]), json!({})),
    );
    assert_eq!(get(&realm).0, 200);
    let client = token(
        &ec,
        keycloak(
            "attestation-service",
            json!([]),
            json!({"attestation-service": {"roles": [ROLE]}}),
        ),
    );
    assert_eq!(get(&client).0, 200);
    let other = token(&ec, keycloak("grafana", json!([ROLE]), json!({})));
    let (status, err) = get(&other);
    assert_eq!(
        (status, err["error"].as_str()),
        (401, Some("invalid_token")),
        "{err}"
    );
    assert!(
        err["message"]
            .as_str()
            .unwrap()
            .contains("attestation-service"),
        "{err}"
    );
    drop(server);

    // Off for local development, whatever the issuer says.
    let server = Server::start_with(
        dir.path(),
        &[
            ("ITL_OIDC_ISSUER", &issuer),
            ("ITL_OIDC_ENABLED", "false"),
            ("ITL_ADMIN_TOKEN", ADMIN),
        ],
    );
    assert_eq!(
        server.call("GET", "/api/v1/machines", Some(&realm), None).0,
        401
    );
    assert_eq!(
        server.call("GET", "/api/v1/machines", Some(ADMIN), None).0,
        200
    );
}

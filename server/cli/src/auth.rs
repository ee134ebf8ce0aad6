//! `auth login | whoami | logout`.

use std::io::{BufRead, IsTerminal};
use std::time::Duration;

use attest_api::Whoami;
use serde_json::json;

use crate::api::Api;
use crate::failure::{Failure, Outcome};
use crate::output::{self, Format};
use crate::session::Claims;
use crate::settings::Settings;
use crate::{AuthCommand, LoginArgs, login, session};

pub fn run(settings: &Settings, command: AuthCommand, format: Format) -> Outcome {
    match command {
        AuthCommand::Login(args) => log_in(settings, args, format),
        AuthCommand::Whoami => whoami(settings, format),
        AuthCommand::Logout => log_out(settings, format),
    }
}

/// Roles from the places Keycloak and the server look: `realm_access.roles` and
/// `resource_access.*.roles`.
fn roles(claims: &Claims) -> Vec<String> {
    let mut out: Vec<String> = claims
        .realm_access
        .iter()
        .flat_map(|a| a.roles.iter().flatten().cloned())
        .collect();
    for (client, access) in claims.resource_access.iter().flatten() {
        for r in access.roles.iter().flatten() {
            out.push(format!("{client}:{r}"));
        }
    }
    out
}

fn identity(claims: &Claims) -> String {
    claims
        .preferred_username
        .as_deref()
        .or(claims.sub.as_deref())
        .unwrap_or("unknown")
        .to_owned()
}

/// Reads the password from stdin: without echo on a terminal, else the first line.
fn read_password() -> Outcome<String> {
    let tty = std::io::stdin().is_terminal();
    let stty = |arg: &str| {
        let _ = std::process::Command::new("stty")
            .arg(arg)
            .stdin(std::process::Stdio::inherit())
            .status();
    };
    if tty {
        eprint!("Password: ");
        stty("-echo");
    }
    let mut line = String::new();
    let read = std::io::stdin().lock().read_line(&mut line);
    if tty {
        stty("echo");
        eprintln!();
    }
    read.map_err(|e| Failure::Other(format!("reading the password: {e}")))?;
    let password = line.trim_end_matches(['\r', '\n']).to_owned();
    if password.is_empty() {
        return Err(Failure::Usage("no password on stdin".into()));
    }
    Ok(password)
}

fn log_in(settings: &Settings, args: LoginArgs, format: Format) -> Outcome {
    let timeout = Duration::from_secs(args.timeout);
    let session = if args.device {
        login::device(settings, timeout)?
    } else if args.password {
        let user = args.username.as_deref().unwrap_or_default();
        login::password(settings, user, &read_password()?)?
    } else {
        login::pkce(settings, !args.no_browser, timeout)?
    };
    session::save(&settings.token_cache(), &session)?;
    let claims = session.claims();
    let who = identity(&claims);
    let roles = roles(&claims);
    match format {
        Format::Json => output::json(&json!({
            "identity": who, "roles": roles, "issuer": session.issuer,
            "expires_at": session.expires_at, "refresh_token": session.refresh_token.is_some(),
        })),
        Format::Table => println!(
            "logged in as {who} (roles: {}); token {}",
            if roles.is_empty() {
                "none".into()
            } else {
                roles.join(", ")
            },
            expiry(session.expires_at)
        ),
    }
    Ok(())
}

fn expiry(at: u64) -> String {
    let now = session::now();
    if at <= now {
        format!("expired {}", output::relative_secs(at, now))
    } else {
        format!("expires {}", output::relative_secs(at, now))
    }
}

fn whoami(settings: &Settings, format: Format) -> Outcome {
    let mut api = Api::new(settings);
    if settings.admin_token.is_some() {
        let server = api.call("GET", "/api/v1/whoami", None)?;
        let seen: Whoami = server.view()?;
        match format {
            Format::Json => output::json(&json!({
                "identity": seen.identity, "break_glass": true, "server": server.body,
            })),
            Format::Table => output::fields(&[
                ("identity", output::text(Some(&seen.identity))),
                ("via", "ITL_ADMIN_TOKEN (break-glass)".into()),
            ]),
        }
        return Ok(());
    }
    // Not logged in: said here, before asking the server.
    api.session(false)?;
    // What the server makes of the token: its identity, or the reason it refuses it.
    let server = api
        .call("GET", "/api/v1/whoami", None)
        .and_then(|a| a.view::<Whoami>());
    // The session the call used (refreshed by it, if it had to be).
    let session = api.session(false)?.clone();
    let claims = session.claims();
    let server_view = match &server {
        Ok(seen) => output::text(Some(&seen.identity)),
        Err(e) => format!("refused: {e}"),
    };
    match format {
        Format::Json => output::json(&json!({
            "identity": identity(&claims),
            "subject": claims.sub,
            "roles": roles(&claims),
            "issuer": session.issuer,
            "client_id": session.client_id,
            "expires_at": session.expires_at,
            "refresh_token": session.refresh_token.is_some(),
            "server_identity": server.as_ref().ok().map(|seen| &seen.identity),
        })),
        Format::Table => output::fields(&[
            ("identity", identity(&claims)),
            ("subject", output::text(claims.sub.as_ref())),
            ("roles", {
                let r = roles(&claims);
                if r.is_empty() {
                    "none".into()
                } else {
                    r.join(", ")
                }
            }),
            ("issuer", session.issuer.clone()),
            ("token", expiry(session.expires_at)),
            (
                "refresh",
                if session.refresh_token.is_some() {
                    "yes".into()
                } else {
                    "no".into()
                },
            ),
            ("server", server_view),
        ]),
    }
    server.map(|_| ())
}

fn log_out(settings: &Settings, format: Format) -> Outcome {
    let path = settings.token_cache();
    let cached = session::load(&path).ok().flatten();
    let revoked = cached.as_ref().is_some_and(login::revoke);
    let removed = session::remove(&path)?;
    match format {
        Format::Json => {
            output::json(&json!({ "logged_out": removed, "refresh_token_revoked": revoked }))
        }
        Format::Table if !removed => println!("not logged in"),
        Format::Table => println!(
            "logged out{}",
            if revoked {
                " (refresh token revoked at the provider)"
            } else {
                ""
            }
        ),
    }
    Ok(())
}

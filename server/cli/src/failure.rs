//! Why a command failed, as one line on stderr and an exit status a script can branch on.
//! The statuses are part of the CLI's interface (README, "Exit status").

use std::fmt;
use std::process::ExitCode;

#[derive(Debug)]
pub enum Failure {
    /// 1: the server answered with an error (unknown id, wrong state, bad input, 5xx).
    Server {
        status: u16,
        code: String,
        message: String,
    },
    /// 2: the command line or the settings are wrong (clap uses 2 as well).
    Usage(String),
    /// 3: not logged in, the session cannot be refreshed, or the server refused the token.
    Auth(String),
    /// 4: the server or the OpenID provider cannot be reached.
    Unreachable(String),
    /// 5: `audit verify` found the chain broken, or a checkpoint that does not verify or is
    /// gone.
    AuditInvalid(String),
    /// 6: a destructive command was not confirmed.
    NotConfirmed,
    /// 1: anything else (a file that cannot be read, a provider error).
    Other(String),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Server { .. } | Failure::Other(_) => 1,
            Failure::Usage(_) => 2,
            Failure::Auth(_) => 3,
            Failure::Unreachable(_) => 4,
            Failure::AuditInvalid(_) => 5,
            Failure::NotConfirmed => 6,
        })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Server {
                status,
                code,
                message,
            } => write!(f, "server answered {status} {code}: {message}"),
            Failure::Usage(m) | Failure::Other(m) | Failure::Unreachable(m) => f.write_str(m),
            Failure::Auth(m) => write!(f, "{m}"),
            Failure::AuditInvalid(m) => write!(f, "the audit chain is NOT valid: {m}"),
            Failure::NotConfirmed => f.write_str("not confirmed; nothing was changed"),
        }
    }
}

pub type Outcome<T = ()> = Result<T, Failure>;

//! `attest-agent`: the Linux side of a machine's TPM identity.
//!
//! Thin binary over `attest-common` (formats, fingerprints) and tss-esapi (the TPM). Output
//! is `key=value` lines on stdout so scripts can read it; diagnostics go to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, Result};
use clap::{Parser, Subcommand};

use attest_host_agent::tpm::{EkType, Tpm};

#[derive(Parser)]
#[command(
    name = "attest-agent",
    version,
    about = "TPM attestation agent for bare-metal Talos machines"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the EK fingerprint (hex SHA-384 of the EK certificate DER, or of the EK public
    /// key's SubjectPublicKeyInfo when there is no certificate) and its source.
    Fingerprint {
        /// An EK certificate or EK public key, PEM or DER.
        #[arg(required_unless_present = "tpm", conflicts_with = "tpm")]
        file: Option<PathBuf>,
        /// Read the EK from this TPM instead (TCTI, e.g. device:/dev/tpmrm0 or
        /// swtpm:host=127.0.0.1,port=2321).
        #[arg(long, value_name = "TCTI")]
        tpm: Option<String>,
        /// With --tpm: which EK to use. Default: the P-384 EK if it has a certificate, else
        /// the RSA-2048 EK if it has one, else the P-384 EK's public key.
        #[arg(long, value_enum, requires = "tpm")]
        ek_type: Option<EkType>,
    },
}

fn fingerprint(file: Option<PathBuf>, tcti: Option<String>, ek_type: Option<EkType>) -> Result<()> {
    if let Some(tcti) = tcti {
        let mut tpm = Tpm::open(&tcti)?;
        let types = match ek_type {
            Some(t) => vec![t],
            None => EkType::PREFERENCE.to_vec(),
        };
        let ek = tpm.ek_identity(&types)?;
        let fp = attest_common::ek_fingerprint(&ek.der)
            .context("the TPM's EK material is not a valid certificate or public key")?;
        println!("ek_fingerprint={}", fp.fingerprint);
        println!("ek_source={}", ek.source);
        println!("ek_type={}", ek.ek_type.name());
        if let Some(index) = ek.nv_index {
            println!("nv_index={index:#010x}");
        }
        return Ok(());
    }
    let path = file.expect("clap requires FILE without --tpm");
    let bytes = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let fp = attest_common::ek_fingerprint(&bytes)
        .with_context(|| format!("{} is not an EK certificate or public key", path.display()))?;
    println!("ek_fingerprint={}", fp.fingerprint);
    println!("ek_source={}", fp.source);
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Fingerprint { file, tpm, ek_type } => fingerprint(file, tpm, ek_type),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("attest-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

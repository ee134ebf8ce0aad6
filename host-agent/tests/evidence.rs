//! TPM evidence end to end against a real swtpm: `attest-common`'s software MakeCredential
//! activated by the TPM, quotes from the TPM verified by `verify_quote` with both crypto
//! providers, and cross-checks with tpm2-tools in both directions.

use std::path::Path;
use std::process::Command;

use attest_common::crypto::CryptoProvider;
use attest_common::crypto::aws_lc::AwsLc;
use attest_common::crypto::rustcrypto::RustCrypto;
use attest_common::der;
use attest_common::tpm::credential::{EkKey, Entropy, OsEntropy, make_credential};
use attest_common::tpm::public::TpmPublic;
use attest_common::tpm::{QuoteError, verify_quote};
use attest_common::wire::{HashAlg, PcrBank, PcrValue};
use attest_host_agent::tpm::{AkType, EkType, Tpm};
use attest_swtpm::Swtpm;

const PROVIDERS: [&dyn CryptoProvider; 2] = [&RustCrypto, &AwsLc];

fn random<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    OsEntropy.fill(&mut b);
    b
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn banks() -> Vec<PcrBank> {
    vec![
        PcrBank {
            hash_alg: HashAlg::Sha384,
            pcrs: heapless::Vec::from_slice(&[0, 1, 2, 3, 4, 5, 6, 7, 16]).unwrap(),
        },
        PcrBank {
            hash_alg: HashAlg::Sha256,
            pcrs: heapless::Vec::from_slice(&[16]).unwrap(),
        },
    ]
}

/// `sha384:0,1,...+sha256:16` for tpm2-tools.
fn tools_selection(banks: &[PcrBank]) -> String {
    banks
        .iter()
        .map(|b| {
            let name = match b.hash_alg {
                HashAlg::Sha256 => "sha256",
                HashAlg::Sha384 => "sha384",
                other => panic!("{other:?}"),
            };
            let list: Vec<String> = b.pcrs.iter().map(|p| p.to_string()).collect();
            format!("{name}:{}", list.join(","))
        })
        .collect::<Vec<_>>()
        .join("+")
}

/// Extends PCR 16 in both banks so the quoted values are not all zero.
fn extend_pcr16(tpm: &Swtpm) {
    let arg = format!(
        "16:sha256={},sha384={}",
        hex(&random::<32>()),
        hex(&random::<48>())
    );
    tpm.tpm2("tpm2_pcrextend", &[&arg]);
}

/// Verifies with every provider and requires them to agree.
fn verify_all(
    ak: &TpmPublic,
    attest: &[u8],
    sig: &[u8],
    nonce: &[u8],
    values: &[PcrValue],
) -> Result<(), QuoteError> {
    let results: Vec<_> = PROVIDERS
        .iter()
        .map(|p| verify_quote(*p, ak, attest, sig, nonce, values).map(|_| ()))
        .collect();
    assert!(
        results.windows(2).all(|w| w[0] == w[1]),
        "providers disagree: {results:?}"
    );
    results[0]
}

#[test]
fn our_make_credential_is_activated_by_the_tpm_for_both_ek_types() {
    let swtpm = Swtpm::start();
    let mut tpm = Tpm::open(&swtpm.tcti()).unwrap();
    for ek_type in [EkType::Rsa2048, EkType::EccP384] {
        let ek = tpm.ek(ek_type).unwrap();
        let (ek_tpmt, ek_name) = tpm.public_area(ek).unwrap();
        let ek_public = TpmPublic::from_tpmt(&ek_tpmt).unwrap();
        assert_eq!(
            ek_public.name.as_slice(),
            &ek_name[..],
            "our Name of the EK is the TPM's"
        );
        let ek_key = EkKey::from_public(&ek_public).unwrap();

        // The server only has the EK certificate: the TCG template defaults it assumes must
        // be what the TPM's EK really is.
        let cert = tpm
            .ek_cert(ek_type)
            .unwrap()
            .expect("swtpm has EK certificates");
        let spki = der::parse_certificate(&cert).unwrap().spki;
        assert_eq!(EkKey::from_spki(spki).unwrap(), ek_key, "{ek_type:?}");

        for ak_type in [AkType::EccP384, AkType::Rsa2048] {
            let ak = tpm.create_ak(ek, ak_type).unwrap();
            let ak_public = TpmPublic::from_tpm2b(&ak.public_tpm2b).unwrap();
            assert_eq!(
                ak_public.name.as_slice(),
                &ak.name[..],
                "our Name of the AK is the TPM's"
            );
            assert!(ak_public.is_restricted_signing());

            let secret = random::<32>();
            let cred = make_credential(&ek_key, &ak.name, &secret, &mut OsEntropy).unwrap();
            let recovered = tpm
                .activate_credential(
                    ak.handle,
                    ek,
                    ek_type,
                    &cred.credential_blob,
                    &cred.encrypted_secret,
                )
                .unwrap();
            assert_eq!(recovered, secret, "{ek_type:?}/{ak_type:?}");

            // A credential for another object's name is refused by the TPM.
            let mut other_name = ak.name.clone();
            *other_name.last_mut().unwrap() ^= 1;
            let wrong = make_credential(&ek_key, &other_name, &secret, &mut OsEntropy).unwrap();
            assert!(
                tpm.activate_credential(
                    ak.handle,
                    ek,
                    ek_type,
                    &wrong.credential_blob,
                    &wrong.encrypted_secret
                )
                .is_err()
            );
            tpm.flush(ak.handle).unwrap();
        }
        tpm.flush(ek).unwrap();
    }
}

#[test]
fn tpm_quotes_verify_and_every_tampering_is_named() {
    let swtpm = Swtpm::start();
    extend_pcr16(&swtpm);
    let mut tpm = Tpm::open(&swtpm.tcti()).unwrap();
    let ek = tpm.ek(EkType::EccP384).unwrap();
    let (ek_tpmt, _) = tpm.public_area(ek).unwrap();
    let banks = banks();
    for ak_type in [AkType::EccP384, AkType::Rsa2048] {
        let ak = tpm.create_ak(ek, ak_type).unwrap();
        let ak_public = TpmPublic::from_tpm2b(&ak.public_tpm2b).unwrap();
        let nonce = random::<32>();
        let (attest, sig) = tpm.quote(ak.handle, &nonce, &banks).unwrap();
        let values = tpm.pcr_values(&banks).unwrap();
        assert_eq!(values.len(), 10);

        for provider in PROVIDERS {
            let ok = verify_quote(provider, &ak_public, &attest, &sig, &nonce, &values)
                .unwrap_or_else(|e| panic!("{} {ak_type:?}: {e}", provider.name()));
            assert_eq!(ok.info.extra_data.as_slice(), &nonce);
            assert_eq!(ok.info.pcr_selection.len(), 2);
        }

        let mut bad_attest = attest.clone();
        bad_attest[40] ^= 0x01;
        assert_eq!(
            verify_all(&ak_public, &bad_attest, &sig, &nonce, &values),
            Err(QuoteError::BadSignature)
        );
        let mut bad_sig = sig.clone();
        *bad_sig.last_mut().unwrap() ^= 0x01;
        assert_eq!(
            verify_all(&ak_public, &attest, &bad_sig, &nonce, &values),
            Err(QuoteError::BadSignature)
        );
        let mut bad_nonce = nonce;
        bad_nonce[0] ^= 0x80;
        assert_eq!(
            verify_all(&ak_public, &attest, &sig, &bad_nonce, &values),
            Err(QuoteError::NonceMismatch)
        );
        let mut bad_values = values.clone();
        bad_values[8].value.0[5] ^= 0x01;
        assert_eq!(
            verify_all(&ak_public, &attest, &sig, &nonce, &bad_values),
            Err(QuoteError::PcrDigestMismatch)
        );
        assert_eq!(
            verify_all(&ak_public, &attest, &sig, &nonce, &values[1..]),
            Err(QuoteError::PcrSelectionMismatch)
        );
        // A decryption key (the EK) is not an AK, whatever it signed.
        let ek_public = TpmPublic::from_tpmt(&ek_tpmt).unwrap();
        assert_eq!(
            verify_all(&ek_public, &attest, &sig, &nonce, &values),
            Err(QuoteError::AkNotRestrictedSigning)
        );
        tpm.flush(ak.handle).unwrap();
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    path.to_str().unwrap().to_owned()
}

/// Runs tpm2_checkquote; true when it accepts.
fn checkquote(tpm: &Swtpm, ak_pub: &str, msg: &str, sig: &str, pcrs: &str, nonce: &[u8]) -> bool {
    let out = Command::new("tpm2_checkquote")
        .args([
            "-u",
            ak_pub,
            "-m",
            msg,
            "-s",
            sig,
            "-f",
            pcrs,
            "-g",
            "sha384",
            "-q",
            &hex(nonce),
        ])
        .env("TPM2TOOLS_TCTI", tpm.tcti())
        .output()
        .expect("run tpm2_checkquote");
    if !out.status.success() {
        eprintln!("tpm2_checkquote: {}", String::from_utf8_lossy(&out.stderr));
    }
    out.status.success()
}

#[test]
fn tpm2_tools_agree_with_our_verifier_both_ways() {
    attest_swtpm::require_tool("tpm2_checkquote", "tpm2-tools");
    let swtpm = Swtpm::start();
    extend_pcr16(&swtpm);
    let dir = swtpm.scratch_dir().to_owned();
    // One bank here: with a two-bank serialized PCR file from tpm2_pcrread, tpm2_checkquote
    // 5.4 reported "PCR values failed to match quote's digest" in about one run in four
    // while the signature and nonce checked out; ours verifies two banks in the test above.
    let banks = vec![banks().remove(0)];
    let selection = tools_selection(&banks);

    // Our path: tss-esapi quote, accepted by ours (above) and by tpm2_checkquote.
    let nonce = random::<32>();
    let (ak_tpm2b, attest, sig, values) = {
        let mut tpm = Tpm::open(&swtpm.tcti()).unwrap();
        let ek = tpm.ek(EkType::Rsa2048).unwrap();
        let ak = tpm.create_ak(ek, AkType::EccP384).unwrap();
        let (attest, sig) = tpm.quote(ak.handle, &nonce, &banks).unwrap();
        let values = tpm.pcr_values(&banks).unwrap();
        (ak.public_tpm2b, attest, sig, values)
    };
    let ak_public = TpmPublic::from_tpm2b(&ak_tpm2b).unwrap();
    assert_eq!(
        verify_all(&ak_public, &attest, &sig, &nonce, &values),
        Ok(())
    );
    let ak_pub = write(&dir, "ours-ak.pub", &ak_tpm2b);
    let msg = write(&dir, "ours.msg", &attest);
    let sig_path = write(&dir, "ours.sig", &sig);
    let pcrs = dir.join("ours.pcrs").to_str().unwrap().to_owned();
    swtpm.tpm2(
        "tpm2_pcrread",
        &[&selection, "-o", &pcrs, "-F", "serialized"],
    );
    assert!(
        checkquote(&swtpm, &ak_pub, &msg, &sig_path, &pcrs, &nonce),
        "tpm2_checkquote refused our quote"
    );

    // What ours rejects, tpm2_checkquote rejects.
    let mut bad_sig = sig.clone();
    *bad_sig.last_mut().unwrap() ^= 1;
    assert_eq!(
        verify_all(&ak_public, &attest, &bad_sig, &nonce, &values),
        Err(QuoteError::BadSignature)
    );
    let bad_sig_path = write(&dir, "bad.sig", &bad_sig);
    assert!(!checkquote(
        &swtpm,
        &ak_pub,
        &msg,
        &bad_sig_path,
        &pcrs,
        &nonce
    ));
    let mut bad_attest = attest.clone();
    bad_attest[40] ^= 1;
    assert_eq!(
        verify_all(&ak_public, &bad_attest, &sig, &nonce, &values),
        Err(QuoteError::BadSignature)
    );
    let bad_msg = write(&dir, "bad.msg", &bad_attest);
    assert!(!checkquote(
        &swtpm, &ak_pub, &bad_msg, &sig_path, &pcrs, &nonce
    ));
    let mut other_nonce = nonce;
    other_nonce[3] ^= 1;
    assert_eq!(
        verify_all(&ak_public, &attest, &sig, &other_nonce, &values),
        Err(QuoteError::NonceMismatch)
    );
    assert!(!checkquote(
        &swtpm,
        &ak_pub,
        &msg,
        &sig_path,
        &pcrs,
        &other_nonce
    ));
    // A flipped PCR 16 value, in our list and in tpm2-tools' PCR file.
    let pcr16 = values
        .iter()
        .find(|v| v.index == 16 && v.hash_alg == HashAlg::Sha384)
        .unwrap();
    let mut file = std::fs::read(&pcrs).unwrap();
    let at = file
        .windows(48)
        .position(|w| w == &pcr16.value[..])
        .expect("PCR 16 in the file");
    file[at] ^= 1;
    let bad_pcrs = write(&dir, "bad.pcrs", &file);
    assert!(!checkquote(
        &swtpm, &ak_pub, &msg, &sig_path, &bad_pcrs, &nonce
    ));
    let mut bad_values = values.clone();
    let i = bad_values
        .iter()
        .position(|v| v.index == 16 && v.hash_alg == HashAlg::Sha384)
        .unwrap();
    bad_values[i].value.0[0] ^= 1;
    assert_eq!(
        verify_all(&ak_public, &attest, &sig, &nonce, &bad_values),
        Err(QuoteError::PcrDigestMismatch)
    );

    // Their path: a quote made by tpm2_quote verifies in ours.
    let ctx = |n: &str| dir.join(n).to_str().unwrap().to_owned();
    swtpm.tpm2(
        "tpm2_createek",
        &["-c", &ctx("ek.ctx"), "-G", "rsa", "-u", &ctx("ek.pub")],
    );
    swtpm.tpm2(
        "tpm2_createak",
        &[
            "-C",
            &ctx("ek.ctx"),
            "-c",
            &ctx("ak.ctx"),
            "-G",
            "ecc384",
            "-g",
            "sha384",
            "-s",
            "ecdsa",
            "-u",
            &ctx("ak.pub"),
            "-n",
            &ctx("ak.name"),
        ],
    );
    swtpm.tpm2("tpm2_flushcontext", &["-t"]);
    let nonce = random::<32>();
    swtpm.tpm2(
        "tpm2_quote",
        &[
            "-c",
            &ctx("ak.ctx"),
            "-l",
            &selection,
            "-q",
            &hex(&nonce),
            "-m",
            &ctx("theirs.msg"),
            "-s",
            &ctx("theirs.sig"),
            "-g",
            "sha384",
        ],
    );
    swtpm.tpm2("tpm2_flushcontext", &["-t"]);
    let their_ak = TpmPublic::from_tpm2b(&std::fs::read(ctx("ak.pub")).unwrap()).unwrap();
    assert_eq!(
        their_ak.name.as_slice(),
        &std::fs::read(ctx("ak.name")).unwrap()[..]
    );
    let values = Tpm::open(&swtpm.tcti())
        .unwrap()
        .pcr_values(&banks)
        .unwrap();
    let their_attest = std::fs::read(ctx("theirs.msg")).unwrap();
    let their_sig = std::fs::read(ctx("theirs.sig")).unwrap();
    assert_eq!(
        verify_all(&their_ak, &their_attest, &their_sig, &nonce, &values),
        Ok(())
    );
    assert_eq!(
        verify_all(
            &their_ak,
            &their_attest,
            &their_sig,
            &random::<32>(),
            &values
        ),
        Err(QuoteError::NonceMismatch)
    );
}

/// Parses tpm2-tools' credential file: magic BADCC0DE, version 1, TPM2B_ID_OBJECT,
/// TPM2B_ENCRYPTED_SECRET.
fn parse_tools_credential(bytes: &[u8]) -> (Vec<u8>, Vec<u8>) {
    assert_eq!(
        &bytes[..4],
        &[0xba, 0xdc, 0xc0, 0xde],
        "credential file magic"
    );
    let rest = &bytes[8..];
    let blob_len = 2 + usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    let (blob, rest) = rest.split_at(blob_len);
    let secret_len = 2 + usize::from(u16::from_be_bytes([rest[0], rest[1]]));
    assert_eq!(rest.len(), secret_len, "nothing after the encrypted secret");
    (blob.to_vec(), rest.to_vec())
}

#[test]
fn tpm2_makecredential_and_ours_are_both_activated() {
    let swtpm = Swtpm::start();
    let dir = swtpm.scratch_dir().to_owned();
    let mut tpm = Tpm::open(&swtpm.tcti()).unwrap();
    for ek_type in [EkType::Rsa2048, EkType::EccP384] {
        let ek = tpm.ek(ek_type).unwrap();
        let (ek_tpmt, _) = tpm.public_area(ek).unwrap();
        let mut ek_tpm2b = (ek_tpmt.len() as u16).to_be_bytes().to_vec();
        ek_tpm2b.extend_from_slice(&ek_tpmt);
        let ek_pub = write(&dir, "ek.pub", &ek_tpm2b);
        let ak = tpm.create_ak(ek, AkType::EccP384).unwrap();
        let secret = random::<32>();
        let secret_path = write(&dir, "secret.bin", &secret);
        let cred_path = dir.join("cred.out").to_str().unwrap().to_owned();
        // -T none: tpm2-tools computes it in software, like us.
        swtpm.tpm2(
            "tpm2_makecredential",
            &[
                "-T",
                "none",
                "-e",
                &ek_pub,
                "-s",
                &secret_path,
                "-n",
                &hex(&ak.name),
                "-o",
                &cred_path,
            ],
        );
        let (their_blob, their_secret) =
            parse_tools_credential(&std::fs::read(&cred_path).unwrap());
        let theirs = tpm
            .activate_credential(ak.handle, ek, ek_type, &their_blob, &their_secret)
            .unwrap();
        assert_eq!(theirs, secret, "tpm2_makecredential {ek_type:?}");

        let ek_key = EkKey::from_public(&TpmPublic::from_tpmt(&ek_tpmt).unwrap()).unwrap();
        let ours = make_credential(&ek_key, &ak.name, &secret, &mut OsEntropy).unwrap();
        assert_eq!(
            ours.credential_blob.len(),
            their_blob.len(),
            "same ID object layout"
        );
        // The same secret layout; an ECC seed's ephemeral point as tpm2-tools writes it may
        // drop a coordinate's leading zero byte (1 time in 256 each), ours keeps 48 bytes.
        let (ours_len, theirs_len) = (ours.encrypted_secret.len(), their_secret.len());
        match ek_type {
            EkType::EccP384 => assert!(
                theirs_len <= ours_len && ours_len - theirs_len <= 2,
                "same secret layout: {ours_len} and {theirs_len}"
            ),
            _ => assert_eq!(ours_len, theirs_len, "same secret layout"),
        }
        let recovered = tpm
            .activate_credential(
                ak.handle,
                ek,
                ek_type,
                &ours.credential_blob,
                &ours.encrypted_secret,
            )
            .unwrap();
        assert_eq!(recovered, secret, "ours {ek_type:?}");
        tpm.flush(ak.handle).unwrap();
        tpm.flush(ek).unwrap();
    }
}

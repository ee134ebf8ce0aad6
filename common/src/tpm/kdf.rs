//! The TPM's key derivation functions (TPM 2.0 Part 1 §11.4.10): KDFa (SP 800-108 counter
//! mode with HMAC) and KDFe (SP 800-56A concatenation KDF). Labels get their terminating
//! zero byte here, as the specification requires.

use super::hash::{self, HashAlg, UnsupportedHash};

/// KDFa: fills `out` (its length in bytes is the `bits / 8` the TPM uses).
pub fn kdfa(
    alg: HashAlg,
    key: &[u8],
    label: &str,
    context_u: &[u8],
    context_v: &[u8],
    out: &mut [u8],
) -> Result<(), UnsupportedHash> {
    let bits = ((out.len() * 8) as u32).to_be_bytes();
    for (i, chunk) in out.chunks_mut(alg.digest_len()).enumerate() {
        let counter = (i as u32 + 1).to_be_bytes();
        let block = hash::hmac(
            alg,
            key,
            &[
                &counter,
                label.as_bytes(),
                &[0],
                context_u,
                context_v,
                &bits,
            ],
        )?;
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    Ok(())
}

/// KDFe: fills `out` from the shared secret `z` (the x coordinate of the ECDH point).
pub fn kdfe(
    alg: HashAlg,
    z: &[u8],
    label: &str,
    party_u: &[u8],
    party_v: &[u8],
    out: &mut [u8],
) -> Result<(), UnsupportedHash> {
    for (i, chunk) in out.chunks_mut(alg.digest_len()).enumerate() {
        let counter = (i as u32 + 1).to_be_bytes();
        let block = hash::digest(
            alg,
            &[&counter, z, label.as_bytes(), &[0], party_u, party_v],
        )?;
        chunk.copy_from_slice(&block[..chunk.len()]);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kdfa_is_hmac_counter_mode() {
        // One block: HMAC(key, 00000001 ‖ "STORAGE" 00 ‖ ctx ‖ 00000080).
        let mut out = [0u8; 16];
        kdfa(HashAlg::Sha256, b"seed", "STORAGE", b"name", b"", &mut out).unwrap();
        let want = hash::hmac(
            HashAlg::Sha256,
            b"seed",
            &[&[0, 0, 0, 1], b"STORAGE\0", b"name", &[0, 0, 0, 128]],
        )
        .unwrap();
        assert_eq!(&out[..], &want[..16]);
        // Two blocks: the second uses counter 2 and the same bit length.
        let mut long = [0u8; 40];
        kdfa(HashAlg::Sha256, b"seed", "X", b"", b"", &mut long).unwrap();
        let second = hash::hmac(
            HashAlg::Sha256,
            b"seed",
            &[&[0, 0, 0, 2], b"X\0", &[0, 0, 1, 64]],
        )
        .unwrap();
        assert_eq!(&long[32..], &second[..8]);
        assert!(kdfa(HashAlg::Sha1, b"k", "L", b"", b"", &mut out).is_err());
    }
}

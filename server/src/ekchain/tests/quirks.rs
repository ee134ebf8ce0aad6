//! EK encoding quirks: serial numbers a strict DER decoder refuses (non-minimal, negative,
//! over-long) are accepted; the signature still covers the exact bytes.

use attest_common::der::{self, SEQUENCE};
use p384::ecdsa::DerSignature;
use p384::ecdsa::signature::Signer as _;
use x509_cert::der::Decode as _;

use super::testca::{NOW, Opts, issue, root};
use super::{chain_of, verified};

/// Re-signs `tbs` fields with a quirky serial: what some TPM vendors' EK certificates carry.
fn with_serial(cert: &[u8], serial: &[u8], key: &p384::ecdsa::SigningKey) -> Vec<u8> {
    let tlv = |tag: u8, content: &[u8]| {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            out.extend([0x82, (len >> 8) as u8, len as u8]);
        }
        out.extend_from_slice(content);
        out
    };
    let (outer, _) = der::expect(cert, SEQUENCE).unwrap();
    let (tbs, rest) = der::expect(outer.value, SEQUENCE).unwrap();
    let (alg, _) = der::expect(rest, SEQUENCE).unwrap();
    let (version, fields) = der::read_tlv(tbs.value).unwrap();
    let (_serial, fields) = der::read_tlv(fields).unwrap();
    let tbs = tlv(
        SEQUENCE,
        &[version.raw, &tlv(0x02, serial), fields].concat(),
    );
    let sig: DerSignature = key.sign(&tbs);
    let bits = [&[0u8][..], sig.as_bytes()].concat();
    tlv(SEQUENCE, &[&tbs[..], alg.raw, &tlv(0x03, &bits)].concat())
}

#[test]
fn ek_encoding_quirks_are_accepted() {
    let r = root("CN=Quirky Vendor Root", &Opts::ca());
    let leaf = issue("CN=quirky ek", &r, &Opts::leaf());
    let chain = chain_of(&[&r]);
    // (serial, whether x509-cert's strict DER decoder refuses it)
    let serials: [(&[u8], bool); 5] = [
        (&[0x00, 0x00, 0x05], true), // non-minimal
        (&[0xff, 0x80], true),       // non-minimal negative
        (&[0; 24], true),            // non-minimal, and longer than 20 bytes
        (&[0xff], false),            // negative (-1)
        (&[0x80, 0x01], false),      // negative
    ];
    for (serial, strict_refuses) in serials {
        let quirky = with_serial(&leaf.der, serial, &r.key);
        assert_eq!(
            x509_cert::Certificate::from_der(&quirky).is_err(),
            strict_refuses,
            "x509-cert on serial {serial:02x?}"
        );
        assert_eq!(
            verified(&chain.verify(&quirky, NOW)).0,
            "Quirky Vendor Root"
        );
    }
}

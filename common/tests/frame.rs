//! The serial link's framing: any payload round-trips, any byte stream is safe to feed,
//! and damage is detected.

use attest_common::frame::{
    Deframer, FrameError, decode_in_place, encode, encode_in_place, in_place_start, max_encoded_len,
};
use proptest::prelude::*;

fn frames_of(stream: &[u8]) -> Vec<Result<Vec<u8>, FrameError>> {
    let mut d = Deframer::<2048>::new();
    stream
        .iter()
        .filter_map(|&b| d.push(b).map(|r| r.map(<[u8]>::to_vec)))
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn payloads_round_trip(payload in prop::collection::vec(any::<u8>(), 0..1500)) {
        let mut out = vec![0u8; max_encoded_len(payload.len())];
        let n = encode(&payload, &mut out).unwrap();
        prop_assert_eq!(out[n - 1], 0);
        prop_assert!(out[..n - 1].iter().all(|&b| b != 0));
        prop_assert_eq!(frames_of(&out[..n]), vec![Ok(payload)]);
    }

    #[test]
    fn random_streams_never_panic_and_never_pass_a_bad_crc(stream in prop::collection::vec(any::<u8>(), 0..3000)) {
        // Whatever is accepted re-encodes to a frame that decodes to the same payload.
        for p in frames_of(&stream).into_iter().flatten() {
            let mut out = vec![0u8; max_encoded_len(p.len())];
            let n = encode(&p, &mut out).unwrap();
            prop_assert_eq!(frames_of(&out[..n]), vec![Ok(p)]);
        }
        let mut copy = stream.clone();
        let _ = decode_in_place(&mut copy);
    }

    #[test]
    fn a_flipped_bit_is_detected(payload in prop::collection::vec(any::<u8>(), 1..600), at in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut out = vec![0u8; max_encoded_len(payload.len())];
        let n = encode(&payload, &mut out).unwrap();
        let i = at.index(n - 1);
        out[i] ^= 1 << bit;
        let got = frames_of(&out[..n]);
        prop_assert!(got.iter().all(|f| f.as_ref() != Ok(&payload)), "{got:?}");
    }

    #[test]
    fn resynchronises_after_garbage(garbage in prop::collection::vec(1u8..=255, 0..100), payload in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut stream = garbage;
        stream.push(0);
        let mut out = vec![0u8; max_encoded_len(payload.len())];
        let n = encode(&payload, &mut out).unwrap();
        stream.extend_from_slice(&out[..n]);
        let got = frames_of(&stream);
        prop_assert_eq!(got.last().cloned(), Some(Ok(payload)));
    }
}

#[test]
fn an_overlong_frame_is_refused_once_then_the_next_one_is_read() {
    let mut d = Deframer::<16>::new();
    let mut results = Vec::new();
    for &b in [7u8; 40].iter().chain([0].iter()) {
        if let Some(r) = d.push(b) {
            results.push(r.map(<[u8]>::to_vec));
        }
    }
    let mut out = [0u8; 32];
    let n = encode(b"ok", &mut out).unwrap();
    for &b in &out[..n] {
        if let Some(r) = d.push(b) {
            results.push(r.map(<[u8]>::to_vec));
        }
    }
    assert_eq!(results, vec![Err(FrameError::TooLarge), Ok(b"ok".to_vec())]);
}

#[test]
fn a_link_request_travels_in_a_frame() {
    use attest_common::wire::{ChallengeRequest, LinkRequest, LinkRequestBody, from_postcard};
    let req = LinkRequest {
        seq: 7,
        body: LinkRequestBody::Challenge(ChallengeRequest::default()),
    };
    let bytes = postcard::to_allocvec(&req).unwrap();
    let mut out = vec![0u8; max_encoded_len(bytes.len())];
    let n = encode(&bytes, &mut out).unwrap();
    let got = frames_of(&out[..n]).remove(0).unwrap();
    assert_eq!(from_postcard::<LinkRequest>(&got).unwrap(), req);
}

proptest! {
    #[test]
    fn in_place_is_the_same_frame(payload in prop::collection::vec(any::<u8>(), 0..1500), slack in 0usize..8) {
        let mut out = vec![0u8; max_encoded_len(payload.len())];
        let n = encode(&payload, &mut out).unwrap();
        let start = in_place_start(payload.len()) + slack;
        let mut buf = vec![0xa5u8; start + payload.len()];
        buf[start..].copy_from_slice(&payload);
        let m = encode_in_place(&mut buf, start, payload.len()).unwrap();
        prop_assert_eq!(&buf[..m], &out[..n]);
        if !payload.is_empty() {
            let mut short = vec![0u8; start + payload.len()];
            prop_assert_eq!(encode_in_place(&mut short, in_place_start(payload.len()) - 1, payload.len()), Err(FrameError::TooLarge));
        }
}
}

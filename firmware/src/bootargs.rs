//! The image's command line (`-append` in QEMU, the boot loader's line on a stick):
//! `mode=register|attest|receipt key=<hex of the server's response key SPKI>`.
//!
//! The key is pinned at boot, not learned from the link: the relay is not trusted, and
//! only a key that came with the image can check the server's signed actions.

use attest_common::hex;
use attest_common::nonce::SPKI_LEN;

use crate::agent::Mode;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootArgs {
    pub mode: Mode,
    pub server_key: Option<[u8; SPKI_LEN]>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum BootArgsError {
    NoMode,
    UnknownMode,
    BadKey,
}

impl core::fmt::Display for BootArgsError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            BootArgsError::NoMode => "no mode= on the command line",
            BootArgsError::UnknownMode => "mode= must be register, attest or receipt",
            BootArgsError::BadKey => "key= must be the hex of a 120-byte P-384 SPKI",
        })
    }
}

pub fn parse(line: &str) -> Result<BootArgs, BootArgsError> {
    let mut mode = None;
    let mut server_key = None;
    for word in line.split_ascii_whitespace() {
        match word.split_once('=') {
            Some(("mode", m)) => mode = Some(Mode::parse(m).ok_or(BootArgsError::UnknownMode)?),
            Some(("key", k)) => {
                let mut key = [0u8; SPKI_LEN];
                hex::decode_into(k, &mut key).map_err(|_| BootArgsError::BadKey)?;
                server_key = Some(key);
            }
            // Other words belong to someone else (a boot loader's own options).
            _ => {}
        }
    }
    Ok(BootArgs {
        mode: mode.ok_or(BootArgsError::NoMode)?,
        server_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_key() {
        let key = "ab".repeat(SPKI_LEN);
        let a = parse(&alloc_line(&key)).unwrap();
        assert_eq!(a.mode, Mode::Attest);
        assert_eq!(a.server_key, Some([0xab; SPKI_LEN]));
        assert_eq!(
            parse("console=ttyS0 mode=receipt").unwrap().mode,
            Mode::Receipt
        );
        assert_eq!(parse("").unwrap_err(), BootArgsError::NoMode);
        assert_eq!(parse("mode=boot").unwrap_err(), BootArgsError::UnknownMode);
        assert_eq!(
            parse("mode=attest key=abcd").unwrap_err(),
            BootArgsError::BadKey
        );
        assert_eq!(
            parse("mode=attest key=zz").unwrap_err(),
            BootArgsError::BadKey
        );
    }

    fn alloc_line(key: &str) -> heapless::String<512> {
        let mut s = heapless::String::new();
        s.push_str("mode=attest key=").unwrap();
        s.push_str(key).unwrap();
        s
    }
}

//! The machine's own identity from SMBIOS (DMTF DSP0134): the type 1 "System Information"
//! structure's UUID, serial number and product name, sent with the registration so an
//! operator can match a TPM to the box in front of them.
//!
//! The tables are whatever the platform firmware left in memory, so they are parsed as
//! untrusted bytes: every offset is checked, nothing here can panic (property-tested).

/// Where the entry point lives on a PC: the BIOS F segment.
pub const F_SEGMENT: (usize, usize) = (0xF_0000, 0x1_0000);

/// The structure table's location, from an entry point found in `segment` (which starts at
/// physical address `base`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Table {
    pub address: u64,
    pub length: usize,
}

fn checksum_ok(bytes: &[u8]) -> bool {
    bytes.iter().fold(0u8, |s, b| s.wrapping_add(*b)) == 0
}

/// Finds the SMBIOS 3 (`_SM3_`) or 2.1 (`_SM_`) entry point on a 16-byte boundary.
pub fn find_table(segment: &[u8]) -> Option<Table> {
    let mut at = 0;
    while at + 0x20 <= segment.len() {
        let s = &segment[at..];
        if s.starts_with(b"_SM3_") {
            let len = usize::from(s[6]);
            if (0x18..=0x20).contains(&len) && checksum_ok(&s[..len]) {
                let max = u32::from_le_bytes(s[0x0c..0x10].try_into().ok()?);
                let address = u64::from_le_bytes(s[0x10..0x18].try_into().ok()?);
                return Some(Table {
                    address,
                    length: max as usize,
                });
            }
        } else if s.starts_with(b"_SM_") {
            let len = usize::from(s[5]);
            if (0x1f..=0x20).contains(&len) && checksum_ok(&s[..len]) && &s[0x10..0x15] == b"_DMI_"
            {
                let length = u16::from_le_bytes([s[0x16], s[0x17]]);
                let address = u32::from_le_bytes(s[0x18..0x1c].try_into().ok()?);
                return Some(Table {
                    address: u64::from(address),
                    length: usize::from(length),
                });
            }
        }
        at += 16;
    }
    None
}

/// What type 1 says. Strings borrow from the table.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SystemInfo<'a> {
    /// RFC 4122 text form, lowercase.
    pub uuid: Option<[u8; 36]>,
    pub serial: Option<&'a str>,
    pub product: Option<&'a str>,
}

impl SystemInfo<'_> {
    pub fn uuid_str(&self) -> Option<&str> {
        self.uuid
            .as_ref()
            .and_then(|u| core::str::from_utf8(u).ok())
    }
}

/// The `n`th (1-based) string of the structure whose strings start at `strings`.
fn string(strings: &[u8], n: u8) -> Option<&str> {
    if n == 0 {
        return None;
    }
    let s = strings
        .split(|&b| b == 0)
        .take_while(|s| !s.is_empty())
        .nth(usize::from(n) - 1)?;
    let s = core::str::from_utf8(s).ok()?.trim();
    // Placeholders firmware writes when it knows nothing.
    let blank = s.is_empty()
        || s.eq_ignore_ascii_case("None")
        || s.eq_ignore_ascii_case("To be filled by O.E.M.")
        || s.eq_ignore_ascii_case("Default string");
    (!blank).then_some(s)
}

fn uuid_text(raw: &[u8; 16]) -> Option<[u8; 36]> {
    // All zeros: not present; all ones: not set (DSP0134 §7.2.1).
    if raw.iter().all(|&b| b == 0) || raw.iter().all(|&b| b == 0xff) {
        return None;
    }
    // The first three fields are little-endian since SMBIOS 2.6.
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    let hex = b"0123456789abcdef";
    let mut out = [0u8; 36];
    let mut o = 0;
    for (i, &idx) in order.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out[o] = b'-';
            o += 1;
        }
        out[o] = hex[usize::from(raw[idx] >> 4)];
        out[o + 1] = hex[usize::from(raw[idx] & 0xf)];
        o += 2;
    }
    Some(out)
}

/// Walks the structure table for the first type 1 structure.
pub fn system_info(table: &[u8]) -> SystemInfo<'_> {
    let mut at = 0;
    while at + 4 <= table.len() {
        let kind = table[at];
        let len = usize::from(table[at + 1]);
        if len < 4 || at + len > table.len() {
            break;
        }
        let formatted = &table[at..at + len];
        // Strings follow the formatted area and end with two NULs.
        let rest = &table[at + len..];
        let Some(end) = rest.windows(2).position(|w| w == [0, 0]) else {
            break;
        };
        let strings = &rest[..end + 1];
        if kind == 1 {
            let get = |i: usize| formatted.get(i).copied().unwrap_or(0);
            return SystemInfo {
                uuid: formatted
                    .get(0x08..0x18)
                    .and_then(|u| u.try_into().ok())
                    .and_then(uuid_text),
                serial: string(strings, get(0x07)),
                product: string(strings, get(0x05)),
            };
        }
        if kind == 127 {
            break;
        }
        at += len + end + 2;
    }
    SystemInfo::default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type1_strings_and_uuid() {
        // type 1, length 0x1b, handle 0x0100; manufacturer 1, product 2, version 0,
        // serial 3, UUID, wake-up type, SKU 0, family 0.
        let mut t = [0u8; 0x1b].to_vec();
        t[0] = 1;
        t[1] = 0x1b;
        t[4] = 1;
        t[5] = 2;
        t[7] = 3;
        let uuid = [
            0x44, 0x45, 0x4c, 0x4c, 0x00, 0x00, 0x00, 0x10, 0x80, 0x00, 0, 0, 0, 0, 0, 1,
        ];
        t[8..0x18].copy_from_slice(&uuid);
        t.extend_from_slice(b"QEMU\0Standard PC\0SN-42\0\0");
        t.extend_from_slice(&[127, 4, 0, 0, 0, 0]);
        let info = system_info(&t);
        assert_eq!(info.serial, Some("SN-42"));
        assert_eq!(info.product, Some("Standard PC"));
        assert_eq!(
            info.uuid_str(),
            Some("4c4c4544-0000-1000-8000-000000000001")
        );
    }

    #[test]
    fn entry_points_need_their_checksum() {
        let mut seg = [0u8; 64];
        seg[16..21].copy_from_slice(b"_SM3_");
        seg[16 + 6] = 0x18;
        seg[16 + 0x0c..16 + 0x10].copy_from_slice(&0x1234u32.to_le_bytes());
        seg[16 + 0x10..16 + 0x18].copy_from_slice(&0xe_1000u64.to_le_bytes());
        assert_eq!(find_table(&seg), None, "bad checksum");
        let sum = seg[16..16 + 0x18]
            .iter()
            .fold(0u8, |s, b| s.wrapping_add(*b));
        seg[16 + 5] = 0u8.wrapping_sub(sum);
        assert_eq!(
            find_table(&seg),
            Some(Table {
                address: 0xe_1000,
                length: 0x1234
            })
        );
    }
}

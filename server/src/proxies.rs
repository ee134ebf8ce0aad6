//! `ITL_TRUSTED_PROXIES`: whose `X-Forwarded-For` is believed (DESIGN.md §3.10).
//!
//! Behind a TLS terminator or load balancer every connection comes from the proxy, so the
//! audit log's `source_ip` would name the proxy. A proxy appends the address of the peer it
//! serves to `X-Forwarded-For`; anyone can send that header too, so it is read only when
//! the TCP peer is a trusted proxy, and then from the right: the right-most address that is
//! not itself a trusted proxy is the client (everything left of it was written by someone
//! we cannot vouch for). From any other peer the header is ignored and the peer is the
//! client.

use std::net::IpAddr;

/// A set of addresses and networks (`10.0.0.5`, `10.1.0.0/16`, `fd00::/8`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies(Vec<Network>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Network {
    base: IpAddr,
    prefix: u8,
}

impl Network {
    fn contains(&self, ip: IpAddr) -> bool {
        match (self.base, canonical(ip)) {
            (IpAddr::V4(b), IpAddr::V4(a)) => {
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(b) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(b), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(b) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.5`, what a dual-stack socket reports) as
/// IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl TrustedProxies {
    /// Parses the comma-separated list (empty: nobody is trusted).
    pub fn parse(list: &str) -> Result<TrustedProxies, String> {
        let mut out = Vec::new();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            let (addr, prefix) = match item.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (item, None),
            };
            let raw: IpAddr = addr
                .parse()
                .map_err(|_| format!("'{item}' is not an IP address or a CIDR network"))?;
            // An IPv4-mapped network (::ffff:10.0.0.0/104) is the IPv4 one.
            let (base, offset) = match raw {
                IpAddr::V6(v6) if v6.to_ipv4_mapped().is_some() => (canonical(raw), 96),
                _ => (raw, 0),
            };
            let max = if base.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => p
                    .parse::<u8>()
                    .ok()
                    .and_then(|p| p.checked_sub(offset))
                    .filter(|p| *p <= max)
                    .ok_or_else(|| {
                        format!(
                            "'{item}': the prefix length is not {offset} to {}",
                            max + offset
                        )
                    })?,
            };
            let network = Network { base, prefix };
            // 10.0.0.5/8 would be taken for 10.0.0.0/8: say what was meant.
            if mask_off(base, prefix) != base {
                return Err(format!(
                    "'{item}' has host bits set: write the network, {}/{prefix}",
                    mask_off(base, prefix)
                ));
            }
            out.push(network);
        }
        Ok(TrustedProxies(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        self.0.iter().any(|n| n.contains(ip))
    }

    /// The client's address: `peer` unless it is a trusted proxy, else the right-most
    /// address of the `X-Forwarded-For` values (in the order the headers came) that is not
    /// a trusted proxy. An entry that is not an address ends the walk: the client is then
    /// the last trusted hop seen. When every entry is a trusted proxy, the left-most one.
    pub fn client<'a>(&self, peer: IpAddr, forwarded_for: impl Iterator<Item = &'a str>) -> IpAddr {
        let peer = canonical(peer);
        if !self.contains(peer) {
            return peer;
        }
        let entries: Vec<&str> = forwarded_for
            .flat_map(|h| h.split(','))
            .map(str::trim)
            .filter(|e| !e.is_empty())
            .collect();
        let mut client = peer;
        for entry in entries.iter().rev() {
            let Some(ip) = parse_entry(entry) else {
                return client;
            };
            client = ip;
            if !self.contains(ip) {
                return ip;
            }
        }
        client
    }

    /// The list as it would be written (for logs).
    pub fn describe(&self) -> String {
        self.0
            .iter()
            .map(|n| format!("{}/{}", n.base, n.prefix))
            .collect::<Vec<_>>()
            .join(",")
    }
}

fn mask_off(ip: IpAddr, prefix: u8) -> IpAddr {
    match ip {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V4((u32::from(a) & mask).into())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::V6((u128::from(a) & mask).into())
        }
    }
}

/// One `X-Forwarded-For` entry: an address, optionally with a port (`1.2.3.4:80`,
/// `[2001:db8::1]:80`, `[2001:db8::1]`), as some proxies write them.
fn parse_entry(entry: &str) -> Option<IpAddr> {
    if let Ok(ip) = entry.parse::<IpAddr>() {
        return Some(canonical(ip));
    }
    if let Some(rest) = entry.strip_prefix('[') {
        let (inside, after) = rest.split_once(']')?;
        if !(after.is_empty() || after.strip_prefix(':').is_some_and(is_port)) {
            return None;
        }
        return inside.parse::<IpAddr>().ok().map(canonical);
    }
    let (addr, port) = entry.rsplit_once(':')?;
    if !is_port(port) {
        return None;
    }
    addr.parse::<std::net::Ipv4Addr>().ok().map(IpAddr::V4)
}

fn is_port(p: &str) -> bool {
    !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn parsing_addresses_and_networks() {
        let t = TrustedProxies::parse(" 10.0.0.5, 192.168.0.0/16 ,fd00::/8,::1,").unwrap();
        assert_eq!(t.describe(), "10.0.0.5/32,192.168.0.0/16,fd00::/8,::1/128");
        assert!(t.contains(ip("10.0.0.5")));
        assert!(!t.contains(ip("10.0.0.6")));
        assert!(t.contains(ip("192.168.200.1")));
        assert!(!t.contains(ip("192.169.0.1")));
        assert!(t.contains(ip("fd12::1")));
        assert!(t.contains(ip("::1")));
        assert!(!t.contains(ip("127.0.0.1")));
        // A dual-stack socket's IPv4-mapped peer is the IPv4 address.
        assert!(t.contains(ip("::ffff:10.0.0.5")));
        let mapped = TrustedProxies::parse("::ffff:10.0.0.0/104").unwrap();
        assert!(mapped.contains(ip("10.9.9.9")), "{mapped:?}");
        assert!(TrustedProxies::parse("").unwrap().is_empty());
        let all = TrustedProxies::parse("0.0.0.0/0").unwrap();
        assert!(all.contains(ip("203.0.113.9")));
        assert!(!all.contains(ip("2001:db8::1")));

        for bad in [
            "10.0.0",
            "10.0.0.0/33",
            "fd00::/129",
            "10.0.0.0/x",
            "proxy.example",
            "10.0.0.5/8",
            "10.0.0.0/",
        ] {
            let e = TrustedProxies::parse(bad).unwrap_err();
            assert!(e.contains(bad.split('/').next().unwrap()), "{bad}: {e}");
        }
        assert!(
            TrustedProxies::parse("10.0.0.5/8")
                .unwrap_err()
                .contains("10.0.0.0/8")
        );
    }

    #[test]
    fn the_right_most_untrusted_address_is_the_client() {
        let t = TrustedProxies::parse("10.0.0.1,10.0.1.0/24").unwrap();
        let client = |peer: &str, headers: &[&str]| t.client(ip(peer), headers.iter().copied());
        // Not a trusted peer: its header is ignored, whatever it says.
        assert_eq!(client("203.0.113.7", &["198.51.100.1"]), ip("203.0.113.7"));
        // A trusted proxy without a header: the proxy itself.
        assert_eq!(client("10.0.0.1", &[]), ip("10.0.0.1"));
        // One proxy.
        assert_eq!(client("10.0.0.1", &["198.51.100.1"]), ip("198.51.100.1"));
        // A client that forged an entry: the forged one is left of the real one.
        assert_eq!(
            client("10.0.0.1", &["1.1.1.1, 198.51.100.1"]),
            ip("198.51.100.1")
        );
        // Two trusted hops, over several headers: skipped from the right.
        assert_eq!(
            client("10.0.0.1", &["6.6.6.6, 198.51.100.1", "10.0.1.9"]),
            ip("198.51.100.1")
        );
        // Only trusted hops: the left-most.
        assert_eq!(client("10.0.0.1", &["10.0.1.2, 10.0.1.3"]), ip("10.0.1.2"));
        // Garbage where an address should be: the last trusted hop seen.
        assert_eq!(client("10.0.0.1", &["unknown"]), ip("10.0.0.1"));
        assert_eq!(
            client("10.0.0.1", &["8.8.8.8, unknown, 10.0.1.7"]),
            ip("10.0.1.7")
        );
        // Ports and brackets, IPv6 and IPv4-mapped.
        assert_eq!(
            client("10.0.0.1", &["198.51.100.1:4711"]),
            ip("198.51.100.1")
        );
        assert_eq!(
            client("10.0.0.1", &["[2001:db8::7]:443"]),
            ip("2001:db8::7")
        );
        assert_eq!(client("10.0.0.1", &["2001:db8::8"]), ip("2001:db8::8"));
        assert_eq!(
            client("::ffff:10.0.0.1", &["::ffff:198.51.100.2"]),
            ip("198.51.100.2")
        );
        assert_eq!(client("10.0.0.1", &["1.2.3.4:99999x"]), ip("10.0.0.1"));
        // Nobody trusted: nothing is believed.
        let none = TrustedProxies::default();
        assert_eq!(
            none.client(ip("10.0.0.1"), ["198.51.100.1"].into_iter()),
            ip("10.0.0.1")
        );
    }
}

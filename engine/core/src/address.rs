//! Which IP addresses can be a node: the one check every edge that accepts a
//! node address (registration, node pools) runs, so the rule lives once.
//!
//! A node's address ends up in DNS answers, so it must be a unicast address
//! some client could reach. This module owns that rule and the reason given
//! for each refusal. It must not resolve, connect or look at interfaces:
//! it judges the address alone.
//!
//! # Refused
//!
//! | Range | Why |
//! |---|---|
//! | `0.0.0.0/8`, `::` | "this network" / unspecified: a source address only |
//! | `255.255.255.255` | limited broadcast |
//! | `224.0.0.0/4`, `ff00::/8` | multicast |
//! | `240.0.0.0/4` | reserved for future use (RFC 1112), not routed |
//! | `169.254.0.0/16`, `fe80::/10` | link-local (see below) |
//! | `::ffff:0:0/96` | IPv4-mapped: register the IPv4 address itself |
//! | `::/96` (besides `::` and `::1`) | deprecated IPv4-compatible form |
//! | `100::/64` | discard-only (RFC 6666) |
//!
//! # Accepted, by choice
//!
//! - **Loopback** (`127.0.0.0/8`, `::1`): single-host deployments, the
//!   embedded default and the tests run nodes on `127.x` addresses.
//! - **Documentation** ranges (`192.0.2.0/24`, `198.51.100.0/24`,
//!   `203.0.113.0/24`, `2001:db8::/32`): they are ordinary unicast addresses
//!   to every router; labs and examples use them, and refusing them would
//!   protect nothing.
//! - **Private** and shared ranges (`10/8`, `172.16/12`, `192.168/16`,
//!   `100.64/10`, `fc00::/7`): internal GTM is a normal use.
//!
//! **Link-local is refused:** such an address is valid on one network
//! segment only (an IPv6 one even needs a zone, which a DNS answer cannot
//! carry), so an answer holding it cannot be used by a client anywhere else,
//! and a node that reports one has almost always picked the wrong interface.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use thiserror::Error;

/// Why an address cannot be a node.
#[derive(Copy, Clone, Debug, PartialEq, Eq, Error)]
pub enum AddressProblem {
    #[error("{0} is unspecified (\"this network\"): it can only be a source address")]
    Unspecified(IpAddr),
    #[error("{0} is the limited broadcast address")]
    Broadcast(IpAddr),
    #[error("{0} is a multicast address")]
    Multicast(IpAddr),
    #[error("{0} is in 240.0.0.0/4, reserved for future use and not routed")]
    Reserved(IpAddr),
    #[error(
        "{0} is link-local: it is valid on one network segment only, so no client elsewhere could use it"
    )]
    LinkLocal(IpAddr),
    #[error("{0} is an IPv4-mapped IPv6 address: register the IPv4 address {1} instead")]
    Ipv4Mapped(IpAddr, Ipv4Addr),
    #[error("{0} is a deprecated IPv4-compatible IPv6 address")]
    Ipv4Compatible(IpAddr),
    #[error("{0} is in the discard-only prefix 100::/64")]
    DiscardOnly(IpAddr),
}

/// `Ok` when `address` can be a node; otherwise the reason it cannot (see
/// the [module docs](self) for the table).
pub fn check_node_address(address: IpAddr) -> Result<(), AddressProblem> {
    match address {
        IpAddr::V4(v4) => check_v4(v4, address),
        IpAddr::V6(v6) => check_v6(v6, address),
    }
}

fn check_v4(v4: Ipv4Addr, address: IpAddr) -> Result<(), AddressProblem> {
    let [first, second, ..] = v4.octets();
    if first == 0 {
        Err(AddressProblem::Unspecified(address))
    } else if v4.is_broadcast() {
        Err(AddressProblem::Broadcast(address))
    } else if v4.is_multicast() {
        Err(AddressProblem::Multicast(address))
    } else if first >= 240 {
        Err(AddressProblem::Reserved(address))
    } else if first == 169 && second == 254 {
        Err(AddressProblem::LinkLocal(address))
    } else {
        Ok(())
    }
}

fn check_v6(v6: Ipv6Addr, address: IpAddr) -> Result<(), AddressProblem> {
    let segments = v6.segments();
    let [s0, s1, s2, s3, s4, s5, ..] = segments;
    if v6.is_unspecified() {
        Err(AddressProblem::Unspecified(address))
    } else if v6.is_loopback() {
        Ok(())
    } else if v6.is_multicast() {
        Err(AddressProblem::Multicast(address))
    } else if s0 & 0xffc0 == 0xfe80 {
        Err(AddressProblem::LinkLocal(address))
    } else if let Some(v4) = v6.to_ipv4_mapped() {
        Err(AddressProblem::Ipv4Mapped(address, v4))
    } else if [s0, s1, s2, s3, s4, s5] == [0; 6] {
        Err(AddressProblem::Ipv4Compatible(address))
    } else if [s0, s1, s2, s3] == [0x100, 0, 0, 0] {
        Err(AddressProblem::DiscardOnly(address))
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn verdict(text: &str) -> String {
        match check_node_address(text.parse().unwrap()) {
            Ok(()) => "ok".to_owned(),
            Err(problem) => problem.to_string(),
        }
    }

    #[test]
    fn addresses_that_cannot_be_nodes_are_refused_with_the_reason() {
        let table = [
            (
                "0.0.0.0",
                "0.0.0.0 is unspecified (\"this network\"): it can only be a source address",
            ),
            (
                "0.1.2.3",
                "0.1.2.3 is unspecified (\"this network\"): it can only be a source address",
            ),
            (
                "255.255.255.255",
                "255.255.255.255 is the limited broadcast address",
            ),
            ("224.0.0.1", "224.0.0.1 is a multicast address"),
            ("239.255.255.250", "239.255.255.250 is a multicast address"),
            (
                "240.0.0.1",
                "240.0.0.1 is in 240.0.0.0/4, reserved for future use and not routed",
            ),
            (
                "255.255.255.254",
                "255.255.255.254 is in 240.0.0.0/4, reserved for future use and not routed",
            ),
            (
                "169.254.10.1",
                "169.254.10.1 is link-local: it is valid on one network segment only, so no client elsewhere could use it",
            ),
            (
                "::",
                ":: is unspecified (\"this network\"): it can only be a source address",
            ),
            ("ff02::1", "ff02::1 is a multicast address"),
            (
                "fe80::1",
                "fe80::1 is link-local: it is valid on one network segment only, so no client elsewhere could use it",
            ),
            (
                "febf::1",
                "febf::1 is link-local: it is valid on one network segment only, so no client elsewhere could use it",
            ),
            (
                "::ffff:192.0.2.1",
                "::ffff:192.0.2.1 is an IPv4-mapped IPv6 address: register the IPv4 address 192.0.2.1 instead",
            ),
            (
                "::192.0.2.1",
                "::c000:201 is a deprecated IPv4-compatible IPv6 address",
            ),
            ("100::1", "100::1 is in the discard-only prefix 100::/64"),
        ];
        for (address, reason) in table {
            assert_eq!(verdict(address), reason, "{address}");
        }
    }

    #[test]
    fn loopback_documentation_private_and_public_addresses_are_nodes() {
        for address in [
            "127.0.0.1",
            "127.0.0.21",
            "127.255.255.254",
            "::1",
            "192.0.2.1",
            "198.51.100.7",
            "203.0.113.9",
            "2001:db8::6",
            "10.0.0.1",
            "172.16.5.4",
            "192.168.1.1",
            "100.64.0.1",
            "fd00::1",
            "1.1.1.1",
            "223.255.255.255",
            "169.253.255.255",
            "169.255.0.1",
            "fec0::1",
            "2606:4700::1111",
            "::2:0:0:1",
            "100:0:0:1::1",
        ] {
            assert_eq!(verdict(address), "ok", "{address}");
        }
    }

    proptest! {
        #[test]
        fn the_verdict_matches_the_ranges(octets in any::<[u8; 4]>(), segments in any::<[u16; 8]>()) {
            let v4 = Ipv4Addr::from(octets);
            let refused = octets[0] == 0
                || octets[0] >= 224
                || (octets[0] == 169 && octets[1] == 254);
            prop_assert_eq!(check_node_address(IpAddr::V4(v4)).is_err(), refused, "{}", v4);
            let v6 = Ipv6Addr::from(segments);
            let refused = (segments[..6] == [0; 6] && v6 != Ipv6Addr::LOCALHOST)
                || segments[0] >> 8 == 0xff
                || segments[0] & 0xffc0 == 0xfe80
                || segments[..6] == [0, 0, 0, 0, 0, 0xffff]
                || segments[..4] == [0x100, 0, 0, 0];
            prop_assert_eq!(check_node_address(IpAddr::V6(v6)).is_err(), refused, "{}", v6);
        }
    }
}

//! Sockets: address families, types and flags, socket addresses.

use std::net::{Ipv4Addr, Ipv6Addr};

use super::text::{flags, quoted};

pub(super) const SOCK_FLAGS: &[(u64, &str)] = &[
    (libc::SOCK_CLOEXEC as u64, "SOCK_CLOEXEC"),
    (libc::SOCK_NONBLOCK as u64, "SOCK_NONBLOCK"),
];

pub(super) const MSG_FLAGS: &[(u64, &str)] = &[
    (libc::MSG_OOB as u64, "MSG_OOB"),
    (libc::MSG_PEEK as u64, "MSG_PEEK"),
    (libc::MSG_DONTWAIT as u64, "MSG_DONTWAIT"),
    (libc::MSG_WAITALL as u64, "MSG_WAITALL"),
    (libc::MSG_NOSIGNAL as u64, "MSG_NOSIGNAL"),
    (libc::MSG_MORE as u64, "MSG_MORE"),
];

/// A socket address as strace prints it.
pub fn sockaddr(bytes: &[u8]) -> String {
    let Some(family) = bytes.get(0..2).map(|f| u16::from_ne_bytes([f[0], f[1]])) else {
        return "{...}".to_owned();
    };
    match family as i32 {
        libc::AF_INET if bytes.len() >= 8 => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let addr = Ipv4Addr::new(bytes[4], bytes[5], bytes[6], bytes[7]);
            format!("{{sa_family=AF_INET, sin_port=htons({port}), sin_addr=inet_addr(\"{addr}\")}}")
        }
        libc::AF_INET6 if bytes.len() >= 24 => {
            let port = u16::from_be_bytes([bytes[2], bytes[3]]);
            let octets: [u8; 16] = bytes[8..24].try_into().expect("16 bytes");
            format!(
                "{{sa_family=AF_INET6, sin6_port=htons({port}), sin6_addr=\"{}\"}}",
                Ipv6Addr::from(octets)
            )
        }
        // An abstract name: a NUL, then bytes up to the address's length.
        libc::AF_UNIX if bytes.get(2) == Some(&0) && bytes.len() > 3 => {
            format!(
                "{{sa_family=AF_UNIX, sun_path=@{}}}",
                quoted(&bytes[3..], false)
            )
        }
        libc::AF_UNIX => {
            let path = &bytes[2..];
            let end = path.iter().position(|&b| b == 0).unwrap_or(path.len());
            format!(
                "{{sa_family=AF_UNIX, sun_path={}}}",
                quoted(&path[..end], false)
            )
        }
        other => format!("{{sa_family={other}, ...}}"),
    }
}

/// socket(2)'s domain: `AF_INET`, `AF_UNIX`…
pub(super) fn socket_domain(value: u64) -> String {
    match value as i32 {
        libc::AF_UNIX => "AF_UNIX".to_owned(),
        libc::AF_INET => "AF_INET".to_owned(),
        libc::AF_INET6 => "AF_INET6".to_owned(),
        libc::AF_NETLINK => "AF_NETLINK".to_owned(),
        libc::AF_PACKET => "AF_PACKET".to_owned(),
        other => other.to_string(),
    }
}

/// socket(2)'s protocol: named for the IP families, as strace does.
pub(super) fn socket_protocol(domain: u64, protocol: u64) -> String {
    let ip = matches!(domain as i32, libc::AF_INET | libc::AF_INET6);
    match protocol as i32 {
        libc::IPPROTO_IP if ip => "IPPROTO_IP".to_owned(),
        libc::IPPROTO_TCP if ip => "IPPROTO_TCP".to_owned(),
        libc::IPPROTO_UDP if ip => "IPPROTO_UDP".to_owned(),
        libc::IPPROTO_ICMP if ip => "IPPROTO_ICMP".to_owned(),
        libc::IPPROTO_ICMPV6 if ip => "IPPROTO_ICMPV6".to_owned(),
        other => other.to_string(),
    }
}

/// socket(2)'s type with its flags: `SOCK_STREAM|SOCK_CLOEXEC`.
pub(super) fn socket_type(value: u64) -> String {
    let flag_bits = (libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK) as u64;
    let base = match (value & !flag_bits) as i32 {
        libc::SOCK_STREAM => "SOCK_STREAM".to_owned(),
        libc::SOCK_DGRAM => "SOCK_DGRAM".to_owned(),
        libc::SOCK_RAW => "SOCK_RAW".to_owned(),
        libc::SOCK_SEQPACKET => "SOCK_SEQPACKET".to_owned(),
        other => other.to_string(),
    };
    match flags(value & flag_bits, SOCK_FLAGS, "") {
        extra if extra.is_empty() => base,
        extra => format!("{base}|{extra}"),
    }
}

//! The `[server.auth]` and `[server.tls]` sections: who may call the API, the inbox
//! pages and the silences API (an authenticating proxy's header, accepted only from the
//! proxy's addresses, and hashed API tokens, each with an email and a role), and the
//! certificate for serving HTTPS without a proxy. Everything that can be checked from
//! the config alone is checked at load (`Config::validate`); token files and
//! certificates are read when the server starts (`server::auth::Authenticator`,
//! `server::tls`).

use std::net::IpAddr;

use serde::Deserialize;

use super::{invalid, ConfigError};
use crate::inbox::model::Role;

/// Default header an oauth2-proxy style proxy sets to the signed-in user's email.
pub const DEFAULT_PROXY_HEADER: &str = "X-Forwarded-Email";

/// `[server.auth]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Header the authenticating proxy sets to the signed-in user's email.
    pub proxy_header: String,
    /// Addresses (`10.0.0.5`) or networks (`10.0.0.0/24`, `fd00::/8`) of the proxies
    /// whose header is believed. The TCP peer of the connection must be one of them;
    /// empty: the header is never believed (tokens only).
    pub trusted_proxies: Vec<String>,
    /// Emails of team leads (they see every account and the team page).
    pub leads: Vec<String>,
    /// Emails of administrators (as leads; also kind-wide silences).
    pub admins: Vec<String>,
    /// API tokens, stored as the SHA-256 of the token.
    pub tokens: Vec<TokenEntry>,
    /// A TOML file (a mounted secret) with more `[[tokens]]`; empty: none.
    pub tokens_file: String,
    /// An environment variable holding the same TOML as `tokens_file`; empty: none.
    pub tokens_env: String,
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            proxy_header: DEFAULT_PROXY_HEADER.into(),
            trusted_proxies: Vec::new(),
            leads: Vec::new(),
            admins: Vec::new(),
            tokens: Vec::new(),
            tokens_file: String::new(),
            tokens_env: String::new(),
        }
    }
}

/// One API token: who it stands for, and the SHA-256 of the token itself (the token
/// is never stored).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenEntry {
    /// Hex SHA-256 of the token (`printf %s "$TOKEN" | sha256sum`).
    pub sha256: String,
    /// The email the token acts as (matched against accounts' `owner_email`).
    pub email: String,
    pub role: Role,
}

/// The contents of `tokens_file` / `tokens_env`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenFile {
    #[serde(default)]
    pub tokens: Vec<TokenEntry>,
}

/// `[server.tls]`: both files, or neither (plain HTTP).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: String,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: String,
}

impl TlsConfig {
    pub fn enabled(&self) -> bool {
        !self.cert_file.is_empty()
    }
}

/// An address or network of trusted proxies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IpNet {
    addr: IpAddr,
    prefix: u8,
}

impl IpNet {
    /// `10.0.0.5`, `10.0.0.0/8`, `::1`, `fd00::/8`.
    pub fn parse(s: &str) -> Result<IpNet, String> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("{s:?} is not an IP address or CIDR (e.g. 10.0.0.0/24)"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("{s:?}: the prefix length must be 0..={max}")),
            },
        };
        Ok(IpNet { addr, prefix })
    }

    /// Whether `ip` is in this network; an IPv4-mapped IPv6 peer (`::ffff:10.0.0.5`,
    /// as a dual-stack listener sees IPv4 clients) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (self.addr, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                prefix_eq(&n.octets(), &a.octets(), self.prefix as usize)
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                prefix_eq(&n.octets(), &a.octets(), self.prefix as usize)
            }
            _ => false,
        }
    }
}

fn prefix_eq(a: &[u8], b: &[u8], bits: usize) -> bool {
    let whole = bits / 8;
    if a[..whole] != b[..whole] {
        return false;
    }
    let rest = bits % 8;
    rest == 0 || (a[whole] ^ b[whole]) & (0xffu8 << (8 - rest)) == 0
}

/// A SHA-256 written in hex.
pub fn parse_sha256(s: &str) -> Result<[u8; 32], String> {
    let s = s.trim();
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(format!(
            "a token's sha256 must be 64 hex digits (got {} characters); compute it with \
             `printf %s \"$TOKEN\" | sha256sum`, never store the token itself",
            s.len()
        ));
    }
    let mut out = [0u8; 32];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).expect("checked hex");
    }
    Ok(out)
}

/// An email as the proxy or the config gives it: lower-cased, at most 254 characters,
/// one `@`, no spaces or control characters.
pub fn normalize_email(s: &str) -> Result<String, String> {
    let e = s.trim().to_ascii_lowercase();
    if e.is_empty() || e.len() > 254 {
        return Err("an email must have 1 to 254 characters".into());
    }
    if e.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!(
            "{:?} contains a space or control character",
            crate::notify::render::escape::cut(&e, 60)
        ));
    }
    match e.split_once('@') {
        Some((l, d)) if !l.is_empty() && !d.is_empty() && !d.contains('@') => Ok(e),
        _ => Err(format!(
            "{:?} is not an email address",
            crate::notify::render::escape::cut(&e, 60)
        )),
    }
}

impl TokenEntry {
    /// The entry checked: its hash decoded and its email normalised.
    pub fn checked(&self) -> Result<([u8; 32], String), String> {
        let h = parse_sha256(&self.sha256)?;
        let e = normalize_email(&self.email).map_err(|m| format!("token email: {m}"))?;
        Ok((h, e))
    }
}

impl AuthConfig {
    /// The trusted proxies, parsed.
    pub fn proxies(&self) -> Result<Vec<IpNet>, String> {
        self.trusted_proxies
            .iter()
            .map(|s| IpNet::parse(s))
            .collect()
    }

    /// Checks what the config alone can tell.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if axum::http::HeaderName::from_bytes(self.proxy_header.as_bytes()).is_err()
            || self.proxy_header.is_empty()
        {
            return Err(invalid(
                "server.auth.proxy_header",
                format!("{:?} is not a header name", self.proxy_header),
            ));
        }
        self.proxies()
            .map_err(|m| invalid("server.auth.trusted_proxies", m))?;
        for (option, list) in [
            ("server.auth.leads", &self.leads),
            ("server.auth.admins", &self.admins),
        ] {
            for e in list {
                normalize_email(e).map_err(|m| invalid(option, m))?;
            }
        }
        for (i, t) in self.tokens.iter().enumerate() {
            t.checked()
                .map_err(|m| invalid("server.auth.tokens", format!("entry {}: {m}", i + 1)))?;
        }
        Ok(())
    }
}

impl TlsConfig {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cert_file.is_empty() != self.key_file.is_empty() {
            return Err(invalid(
                "server.tls",
                "set both cert_file and key_file (HTTPS), or neither (plain HTTP)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn networks_contain_their_addresses_only() {
        let n = IpNet::parse("10.0.0.0/24").unwrap();
        assert!(n.contains("10.0.0.77".parse().unwrap()));
        assert!(!n.contains("10.0.1.1".parse().unwrap()));
        assert!(n.contains("::ffff:10.0.0.9".parse().unwrap()));
        let one = IpNet::parse("127.0.0.1").unwrap();
        assert!(one.contains("127.0.0.1".parse().unwrap()));
        assert!(!one.contains("127.0.0.2".parse().unwrap()));
        let odd = IpNet::parse("192.168.4.0/22").unwrap();
        assert!(odd.contains("192.168.7.255".parse().unwrap()));
        assert!(!odd.contains("192.168.8.0".parse().unwrap()));
        let v6 = IpNet::parse("fd00::/8").unwrap();
        assert!(v6.contains("fd12::1".parse().unwrap()));
        assert!(!v6.contains("10.0.0.1".parse().unwrap()));
        assert!(IpNet::parse("0.0.0.0/0")
            .unwrap()
            .contains("8.8.8.8".parse().unwrap()));
        for bad in [
            "10.0.0.0/33",
            "10.0.0/8",
            "proxy.local",
            "::/129",
            "1.2.3.4/x",
        ] {
            assert!(IpNet::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hashes_and_emails_are_checked() {
        assert!(parse_sha256(&"ab".repeat(32)).is_ok());
        let e = parse_sha256("abcd").unwrap_err();
        assert!(e.contains("64 hex digits"), "{e}");
        assert!(parse_sha256(&"zz".repeat(32)).is_err());
        assert_eq!(normalize_email(" Ana@X.io ").unwrap(), "ana@x.io");
        for bad in ["", "ana", "ana@", "@x.io", "a b@x.io", "a@b@c"] {
            assert!(normalize_email(bad).is_err(), "{bad}");
        }
        assert!(normalize_email("ana@x.io\nX: y").is_err());
    }
}

//! Server-side request forgery guard for admin-supplied upstream URLs (`base_url`,
//! `health_url`), per security.md: https only, no credentials in the URL, and a host that
//! resolves to a loopback, private, link-local (169.254.0.0/16, the cloud metadata address),
//! unspecified or unique-local address is refused — unless
//! `SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS=1`, which permits http and any address (tests, a
//! local Ollama).
//!
//! Every address a name resolves to must be public: a name with one public and one private
//! address is refused, so a later lookup cannot pick the private one. Callers that contact
//! the URL later should check again just before the call ([`check_upstream_url`] is cheap),
//! because DNS answers change.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::time::Duration;

use reqwest::Url;

use crate::local_failure::LocalFailure;

/// Longest accepted upstream URL.
pub const MAX_URL_LEN: usize = 2048;
/// How long a name may take to resolve before the URL is refused.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(5);

/// Why an upstream URL was refused. Messages are safe to show to the admin who sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlRefused {
    #[error("is not a valid absolute URL")]
    Malformed,
    #[error("is longer than {MAX_URL_LEN} characters")]
    TooLong,
    #[error("must use https (http is only allowed with SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS=1)")]
    NotHttps,
    #[error("must use http or https")]
    UnsupportedScheme,
    #[error("must not contain credentials (provider keys are sent in headers)")]
    HasCredentials,
    #[error("must not contain a fragment")]
    HasFragment,
    #[error("has no host")]
    NoHost,
    #[error("host `{0}` could not be resolved")]
    Unresolvable(String),
    /// The lookup failed on the gateway's side (its resolver unavailable or timing out,
    /// the process out of descriptors): says nothing about the URL.
    #[error(
        "host `{host}` could not be looked up: {failure} (the gateway's own failure; try again)"
    )]
    LookupFailed { host: String, failure: LocalFailure },
    #[error(
        "host `{host}` resolves to {address}, a {kind} address (allowed only with SWITCHBOARD_ALLOW_PRIVATE_UPSTREAMS=1)"
    )]
    ForbiddenAddress {
        host: String,
        address: IpAddr,
        kind: &'static str,
    },
}

/// Checks an admin-supplied upstream URL; resolves its host unless private upstreams are
/// allowed. Returns the parsed URL.
pub async fn check_upstream_url(raw: &str, allow_private: bool) -> Result<Url, UrlRefused> {
    let url = check_syntax(raw, allow_private)?;
    if allow_private {
        return Ok(url);
    }
    let host_text = url.host_str().ok_or(UrlRefused::NoHost)?.to_string();
    let port = url.port_or_known_default().unwrap_or(443);
    // The parser has normalised IP literals (IPv6 in brackets, `2130706433` → 127.0.0.1).
    let literal = host_text
        .trim_start_matches('[')
        .trim_end_matches(']')
        .parse::<IpAddr>();
    let addresses: Vec<IpAddr> = match literal {
        Ok(address) => vec![address],
        Err(_) => resolve(&host_text, port).await?,
    };
    for address in addresses {
        if let Some(kind) = forbidden_kind(address) {
            return Err(UrlRefused::ForbiddenAddress {
                host: host_text,
                address,
                kind,
            });
        }
    }
    Ok(url)
}

/// The checks that need no network: length, scheme, credentials, fragment, host.
pub fn check_syntax(raw: &str, allow_private: bool) -> Result<Url, UrlRefused> {
    if raw.len() > MAX_URL_LEN {
        return Err(UrlRefused::TooLong);
    }
    let url = Url::parse(raw.trim()).map_err(|_| UrlRefused::Malformed)?;
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => return Err(UrlRefused::NotHttps),
        _ => return Err(UrlRefused::UnsupportedScheme),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlRefused::HasCredentials);
    }
    if url.fragment().is_some() {
        return Err(UrlRefused::HasFragment);
    }
    match url.host_str() {
        Some(host) if !host.is_empty() => Ok(url),
        _ => Err(UrlRefused::NoHost),
    }
}

async fn resolve(name: &str, port: u16) -> Result<Vec<IpAddr>, UrlRefused> {
    let host = || name.chars().take(253).collect::<String>();
    let unresolvable = || UrlRefused::Unresolvable(host());
    let lookup_failed = |failure| UrlRefused::LookupFailed {
        host: host(),
        failure,
    };
    // A resolver that does not answer in time is the gateway's problem; a name that does
    // not exist is the URL's (local_failure.rs).
    let lookup = tokio::time::timeout(RESOLVE_TIMEOUT, tokio::net::lookup_host((name, port)))
        .await
        .map_err(|_| lookup_failed(LocalFailure::DnsResolver))?
        .map_err(|error| match LocalFailure::of_io(&error) {
            Some(failure) => lookup_failed(failure),
            None => unresolvable(),
        })?;
    let addresses: Vec<IpAddr> = lookup.map(|socket| socket.ip()).collect();
    if addresses.is_empty() {
        return Err(unresolvable());
    }
    Ok(addresses)
}

/// What kind of non-public address `ip` is, or `None` for a public one.
pub fn forbidden_kind(ip: IpAddr) -> Option<&'static str> {
    match ip {
        IpAddr::V4(v4) => forbidden_v4(v4),
        IpAddr::V6(v6) => forbidden_v6(v6),
    }
}

fn forbidden_v4(ip: Ipv4Addr) -> Option<&'static str> {
    let [a, b, ..] = ip.octets();
    if ip.is_unspecified() || a == 0 {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if ip.is_private() {
        Some("private")
    } else if ip.is_link_local() {
        Some("link-local")
    } else if a == 100 && (64..128).contains(&b) {
        // 100.64.0.0/10, carrier-grade NAT: private in practice.
        Some("shared (carrier-grade NAT)")
    } else if ip.is_broadcast() || ip.is_multicast() || a >= 240 {
        Some("reserved")
    } else {
        None
    }
}

fn forbidden_v6(ip: Ipv6Addr) -> Option<&'static str> {
    // An IPv4 address written as IPv6 (`::ffff:127.0.0.1`) or NAT64 (`64:ff9b::a00:1`)
    // reaches the IPv4 address: judge that one.
    if let Some(v4) = ip.to_ipv4_mapped() {
        return forbidden_v4(v4);
    }
    let segments = ip.segments();
    if segments[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        let [.., hi, lo] = segments;
        let v4 = Ipv4Addr::from((u32::from(hi) << 16) | u32::from(lo));
        return forbidden_v4(v4);
    }
    if ip.is_unspecified() {
        Some("unspecified")
    } else if ip.is_loopback() {
        Some("loopback")
    } else if (segments[0] & 0xfe00) == 0xfc00 {
        // fc00::/7, unique local (AWS's IPv6 metadata address fd00:ec2::254 is one).
        Some("unique-local")
    } else if (segments[0] & 0xffc0) == 0xfe80 {
        Some("link-local")
    } else if ip.is_multicast() {
        Some("reserved")
    } else if segments[..6] == [0, 0, 0, 0, 0, 0] {
        // Deprecated IPv4-compatible addresses (`::127.0.0.1`).
        Some("reserved")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn non_public_addresses_are_named() {
        for (address, kind) in [
            ("127.0.0.1", "loopback"),
            ("127.8.9.10", "loopback"),
            ("10.1.2.3", "private"),
            ("172.16.0.1", "private"),
            ("172.31.255.255", "private"),
            ("192.168.1.1", "private"),
            ("169.254.169.254", "link-local"),
            ("0.0.0.0", "unspecified"),
            ("0.1.2.3", "unspecified"),
            ("100.64.0.1", "shared (carrier-grade NAT)"),
            ("255.255.255.255", "reserved"),
            ("224.0.0.1", "reserved"),
            ("::1", "loopback"),
            ("::", "unspecified"),
            ("fd00:ec2::254", "unique-local"),
            ("fc00::1", "unique-local"),
            ("fe80::1", "link-local"),
            ("::ffff:127.0.0.1", "loopback"),
            ("::ffff:169.254.169.254", "link-local"),
            ("64:ff9b::a00:1", "private"),
            ("::127.0.0.1", "reserved"),
        ] {
            assert_eq!(forbidden_kind(ip(address)), Some(kind), "{address}");
        }
    }

    #[test]
    fn public_addresses_pass() {
        for address in [
            "1.1.1.1",
            "8.8.8.8",
            "172.32.0.1",
            "100.128.0.1",
            "2606:4700:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert_eq!(forbidden_kind(ip(address)), None, "{address}");
        }
    }

    #[test]
    fn syntax_rules() {
        assert!(check_syntax("https://api.openai.com/v1", false).is_ok());
        assert_eq!(
            check_syntax("http://api.openai.com/v1", false).unwrap_err(),
            UrlRefused::NotHttps
        );
        assert!(check_syntax("http://127.0.0.1:9/v1", true).is_ok());
        assert_eq!(
            check_syntax("ftp://example.com", true).unwrap_err(),
            UrlRefused::UnsupportedScheme
        );
        assert_eq!(
            check_syntax("https://user:pw@example.com", false).unwrap_err(),
            UrlRefused::HasCredentials
        );
        assert_eq!(
            check_syntax("https://example.com/#x", false).unwrap_err(),
            UrlRefused::HasFragment
        );
        assert_eq!(
            check_syntax("not a url", false).unwrap_err(),
            UrlRefused::Malformed
        );
        assert_eq!(
            check_syntax(&format!("https://e.com/{}", "a".repeat(MAX_URL_LEN)), false).unwrap_err(),
            UrlRefused::TooLong
        );
    }

    #[tokio::test]
    async fn literal_and_encoded_private_hosts_are_refused() {
        for url in [
            "https://127.0.0.1/v1",
            "https://169.254.169.254/latest/meta-data",
            "https://[::1]/v1",
            "https://[fd00:ec2::254]/",
            "https://[::ffff:10.0.0.1]/",
            // WHATWG URL parsing normalises these to 127.0.0.1.
            "https://2130706433/",
            "https://0x7f000001/",
            "https://127.1/",
            "https://0.0.0.0/",
        ] {
            let err = check_upstream_url(url, false).await.unwrap_err();
            assert!(
                matches!(err, UrlRefused::ForbiddenAddress { .. }),
                "{url}: {err:?}"
            );
        }
    }

    #[tokio::test]
    async fn localhost_is_refused_after_resolution() {
        let err = check_upstream_url("https://localhost:8443/v1", false)
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                UrlRefused::ForbiddenAddress {
                    kind: "loopback",
                    ..
                }
            ),
            "{err:?}"
        );
    }

    #[tokio::test]
    async fn public_literals_pass_and_private_ones_pass_when_allowed() {
        assert!(
            check_upstream_url("https://1.1.1.1/v1", false)
                .await
                .is_ok()
        );
        assert!(
            check_upstream_url("http://127.0.0.1:1234/v1", true)
                .await
                .is_ok()
        );
        assert!(
            check_upstream_url("https://169.254.169.254/", true)
                .await
                .is_ok()
        );
    }
}

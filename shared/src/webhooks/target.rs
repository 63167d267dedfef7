//! Where a webhook may be sent (SSRF): only `https://` URLs whose host is, and resolves only
//! to, public addresses. Checked when an endpoint is registered and again at every delivery,
//! which then connects to the address it checked (a name that resolved to a public address at
//! registration and to 169.254.169.254 now — DNS rebinding — is refused, not fetched).
//!
//! `allow_loopback` (`WEBHOOKS_ALLOW_LOOPBACK=1`, the local stack and its tests only) also
//! accepts `http://` and loopback addresses; private, link-local and the rest stay refused.

use crate::error::ApiError;
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use url::Url;

/// Ranges no webhook may reach, beyond what `IpAddr`'s stable predicates name: RFC 6890's
/// special-purpose registries (private, CGNAT, link-local, documentation, benchmarking,
/// reserved, ULA, NAT64, 6to4 …).
const BLOCKED: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "::/128",
    "::1/128",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/23",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

/// Why an address is refused, for the 400's message; `None` = public.
pub fn refusal(ip: IpAddr, allow_loopback: bool) -> Option<&'static str> {
    // An IPv4 address written as IPv6 (`::ffff:10.0.0.1`) is judged as the IPv4 one.
    let ip = match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    if ip.is_loopback() {
        return (!allow_loopback).then_some("a loopback address");
    }
    let blocked = BLOCKED.iter().find(|net| {
        net.parse::<IpNet>()
            .expect("the table holds valid networks")
            .contains(&ip)
    })?;
    Some(match *blocked {
        "10.0.0.0/8" | "172.16.0.0/12" | "192.168.0.0/16" | "fc00::/7" => "a private address",
        "169.254.0.0/16" | "fe80::/10" => "a link-local address",
        "100.64.0.0/10" => "a shared (CGNAT) address",
        _ => "a reserved or non-public address",
    })
}

/// A URL that passed the rules, with the addresses it was checked at.
#[derive(Debug, Clone)]
pub struct Target {
    pub url: Url,
    pub host: String,
    pub addrs: Vec<SocketAddr>,
}

fn refuse(message: impl Into<String>) -> ApiError {
    ApiError::validation("url", message)
}

/// Parses and checks the URL's form (no DNS): scheme, host, no credentials.
pub fn parse(raw: &str, allow_loopback: bool) -> Result<Url, ApiError> {
    if raw.len() > super::MAX_URL_LEN {
        return Err(refuse(format!(
            "url must be at most {} characters",
            super::MAX_URL_LEN
        )));
    }
    let url = Url::parse(raw.trim()).map_err(|e| refuse(format!("url is not a valid URL: {e}")))?;
    match url.scheme() {
        "https" => {}
        "http" if allow_loopback => {}
        _ => {
            return Err(refuse(
                "url must start with https:// (webhooks are only sent over TLS)",
            ))
        }
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(refuse("url must not contain a user name or password"));
    }
    if url.host().is_none() {
        return Err(refuse("url must name a host"));
    }
    Ok(url)
}

/// Resolves the URL's host and refuses it unless every address is allowed. A name that does
/// not resolve is refused too (nothing could be delivered to it).
pub async fn resolve(url: &Url, allow_loopback: bool) -> Result<Target, ApiError> {
    let host = url
        .host_str()
        .ok_or_else(|| refuse("url must name a host"))?;
    let port = url
        .port_or_known_default()
        .ok_or_else(|| refuse("url has no port"))?;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = match bare.parse::<IpAddr>() {
        Ok(ip) => vec![SocketAddr::new(ip, port)],
        Err(_) => tokio::net::lookup_host((bare, port))
            .await
            .map_err(|e| refuse(format!("url's host `{bare}` does not resolve: {e}")))?
            .collect(),
    };
    if addrs.is_empty() {
        return Err(refuse(format!("url's host `{bare}` does not resolve")));
    }
    for addr in &addrs {
        if let Some(why) = refusal(addr.ip(), allow_loopback) {
            return Err(refuse(format!(
                "url's host `{bare}` is {why} ({}): webhooks are only sent to public addresses",
                addr.ip()
            )));
        }
    }
    if url.scheme() == "http" && !addrs.iter().all(|a| a.ip().is_loopback()) {
        return Err(refuse(
            "url must start with https:// (plain http is only for loopback in the local stack)",
        ));
    }
    Ok(Target {
        url: url.clone(),
        host: bare.to_string(),
        addrs,
    })
}

/// [`parse`] then [`resolve`].
pub async fn check(raw: &str, allow_loopback: bool) -> Result<Target, ApiError> {
    resolve(&parse(raw, allow_loopback)?, allow_loopback).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(raw: &str, allow_loopback: bool) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        match rt.block_on(check(raw, allow_loopback)) {
            Err(ApiError::Validation { field, message }) => {
                assert_eq!(field, "url");
                message
            }
            other => panic!("{raw}: {other:?}"),
        }
    }

    #[test]
    fn private_loopback_link_local_and_plain_http_are_refused() {
        for (url, why) in [
            ("https://10.0.0.1/hook", "private"),
            ("https://172.20.1.1/", "private"),
            ("https://192.168.1.10/", "private"),
            ("https://127.0.0.1/", "loopback"),
            ("https://[::1]/", "loopback"),
            ("https://169.254.169.254/latest/meta-data", "link-local"),
            ("https://[fe80::1]/", "link-local"),
            ("https://[fd00::1]/", "private"),
            ("https://100.64.0.1/", "CGNAT"),
            ("https://[::ffff:10.0.0.1]/", "private"),
            ("https://0.0.0.0/", "reserved"),
            ("https://localhost/", "loopback"),
        ] {
            let message = refused(url, false);
            assert!(message.contains(why), "{url}: {message}");
        }
        assert!(refused("http://93.184.216.34/", false).contains("https://"));
        assert!(refused("ftp://example.com/", true).contains("https://"));
        assert!(refused("https://user:pw@93.184.216.34/", false).contains("password"));
        assert!(refused("not a url", false).contains("valid URL"));
    }

    #[test]
    fn the_local_flag_allows_loopback_only() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(rt.block_on(check("http://127.0.0.1:9/x", true)).is_ok());
        assert!(rt.block_on(check("http://[::1]:9/x", true)).is_ok());
        assert!(refused("https://10.0.0.1/", true).contains("private"));
        assert!(refused("https://169.254.169.254/", true).contains("link-local"));
        assert!(refused("http://93.184.216.34/", true).contains("https://"));
        // A public address literal passes without any DNS.
        assert!(rt.block_on(check("https://93.184.216.34/x", false)).is_ok());
    }
}

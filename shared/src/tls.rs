//! The TLS of every HTTPS client outside the AWS SDK (the GPU providers, Stripe, Cognito's
//! JWKS, webhook deliveries): rustls on aws-lc-rs, the crypto library the SDK's client
//! (`aws.rs`) and `jsonwebtoken` already link.
//!
//! Why a ready configuration instead of reqwest's `rustls-tls` feature: in reqwest 0.12 that
//! feature always brings `ring` as rustls' provider, a second crypto library in every binary
//! (docs/decisions.md, "Binary size"). With `rustls-tls-manual-roots-no-provider` reqwest links
//! no provider and takes this configuration as it is.

use std::sync::{Arc, LazyLock};

/// Built once per process: the providers and Stripe are public endpoints, so the trust store is
/// the web PKI roots compiled in (the ones reqwest's `rustls-tls` used), not the platform's.
static CLIENT_CONFIG: LazyLock<rustls::ClientConfig> = LazyLock::new(|| {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let roots = rustls::RootCertStore {
        roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
    };
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("aws-lc-rs supports the default TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    // What reqwest offers itself when built without HTTP/2.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    config
});

/// A reqwest client builder on [`CLIENT_CONFIG`]; the caller adds its timeouts and policies.
/// Plain `http://` URLs (the fakes on loopback) are unaffected.
pub fn https_client() -> reqwest::ClientBuilder {
    reqwest::Client::builder().use_preconfigured_tls(CLIENT_CONFIG.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn https_clients_build_on_aws_lc_with_the_web_roots() {
        let config = &*CLIENT_CONFIG;
        // The hybrid post-quantum key exchange exists in aws-lc-rs' provider only (ring has
        // none): the configuration is on aws-lc-rs, not on whatever provider is the default.
        let groups: Vec<_> = config
            .crypto_provider()
            .kx_groups
            .iter()
            .map(|g| g.name())
            .collect();
        assert!(
            groups.contains(&rustls::NamedGroup::X25519MLKEM768),
            "{groups:?}"
        );
        assert!(config
            .crypto_provider()
            .cipher_suites
            .iter()
            .any(|s| s.version() == &rustls::version::TLS13));
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
        assert!(config.enable_sni);
        https_client()
            .timeout(std::time::Duration::from_secs(1))
            .build()
            .expect("a client on the shared TLS configuration builds");
    }
}

//! JSON logs through `tracing`. Nothing that logs may include a key, secret, token or script:
//! log ids and prefixes, never the values.

use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Levels per target when `RUST_LOG` is unset or not understood.
const DEFAULT_FILTER: &str = "info,aws_config=warn,aws_smithy_runtime=warn,hyper=warn";

/// Installs the JSON subscriber once; later calls are no-ops (tests and the local server share
/// a process).
pub fn init() {
    let _ = tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_ansi(false)
        .with_writer(std::io::stderr)
        .finish()
        .with(filter(std::env::var("RUST_LOG").ok().as_deref()))
        .try_init();
}

/// `RUST_LOG` as `level` and `target=level` directives (`info,mimiry_shared=debug`).
///
/// Why `Targets` and not `EnvFilter`: `EnvFilter` also takes span and field directives
/// (`[span{field=x}]=debug`), and for those it links a regex engine, ~0.35 MB of every
/// binary (docs/decisions.md, "Binary size"); nothing here filters on spans. A value with such
/// directives, or none at all, falls back to [`DEFAULT_FILTER`].
fn filter(rust_log: Option<&str>) -> Targets {
    rust_log
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| DEFAULT_FILTER.parse().expect("the default filter parses"))
}

#[cfg(test)]
mod tests {
    use super::filter;
    use tracing::Level;

    #[test]
    fn rust_log_sets_levels_per_target_and_falls_back_to_the_default() {
        let f = filter(Some("warn,mimiry_jobs=debug"));
        assert!(f.would_enable("mimiry_jobs::handler", &Level::DEBUG));
        assert!(!f.would_enable("aws_config", &Level::INFO));
        assert!(f.would_enable("aws_config", &Level::WARN));

        for unset_or_unknown in [None, Some("[span{field=1}]=debug")] {
            let f = filter(unset_or_unknown);
            assert!(f.would_enable("mimiry_jobs", &Level::INFO));
            assert!(!f.would_enable("mimiry_jobs", &Level::DEBUG));
            assert!(!f.would_enable("aws_smithy_runtime::client", &Level::INFO));
            assert!(f.would_enable("aws_smithy_runtime::client", &Level::WARN));
        }
    }
}

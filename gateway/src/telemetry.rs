//! Logging for the gateway binary, from its configuration (the mechanism is shared with the
//! dispatcher: `pushgate_dispatcher::telemetry`).

use crate::config::{Config, LogFormat};

/// Installs the global subscriber; a second call (tests) is a no-op.
pub fn init(config: &Config) {
    pushgate_dispatcher::telemetry::init_logging(&config.log, config.log_format == LogFormat::Json);
}

//! Per-shard connection pools to provider endpoints.
//!
//! Owns: connecting (TCP, TLS with rustls and webpki roots, ALPN), HTTP/1.1 keep-alive pools,
//! HTTP/2 multiplexing with more connections opened when one's streams are used up, connect
//! and first-byte timeouts, and the rule that a connection that failed mid-response is never
//! reused (a lease goes back to the pool only after a complete response body).
//! Does not: build provider requests or read bodies (callers do, with idle/total timeouts).
//! Key types: [`EndpointPool`], [`PoolConn`], [`UpstreamError`].

mod body;
mod connect;
pub mod h1;
mod pool;

pub use body::UpBody;
pub use connect::{UpStream, tls_client_config};
pub use pool::{EndpointPool, PoolConn, PoolLimits, ReqBody, Sent};

/// Errors talking to an upstream.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// No address could be connected to.
    #[error("connect failed: {0}")]
    Connect(#[source] std::io::Error),
    /// TLS handshake failed.
    #[error("TLS handshake failed: {0}")]
    Tls(#[source] std::io::Error),
    /// HTTP handshake or exchange failed (HTTP/2).
    #[error("HTTP error: {0}")]
    Http(#[source] hyper::Error),
    /// Reading or writing the connection failed (HTTP/1.1).
    #[error("connection error: {0}")]
    Io(#[source] std::io::Error),
    /// The upstream closed the connection before its answer was complete (HTTP/1.1).
    #[error("connection closed before the response")]
    Closed,
    /// The upstream's answer broke HTTP/1.1 or our limits.
    #[error(transparent)]
    Malformed(h1::codec::Malformed),
    /// A timeout fired.
    #[error("{0} timeout after {1:?}")]
    Timeout(&'static str, std::time::Duration),
    /// The endpoint has no resolved address.
    #[error("no address resolved for {0}")]
    NoAddress(String),
}

impl UpstreamError {
    /// The gateway error for this failure (client-safe text, no addresses).
    pub fn into_gateway(self) -> crate::GatewayError {
        use crate::{ErrorKind, GatewayError};
        let (kind, msg) = match &self {
            Self::Connect(_) | Self::Tls(_) | Self::NoAddress(_) => (
                ErrorKind::UpstreamConnect,
                "The upstream provider could not be reached.",
            ),
            Self::Timeout(_, _) => (
                ErrorKind::UpstreamTimeout,
                "The upstream provider did not answer in time.",
            ),
            Self::Http(_) | Self::Io(_) | Self::Closed | Self::Malformed(_) => (
                ErrorKind::UpstreamProtocol,
                "The connection to the upstream provider failed.",
            ),
        };
        GatewayError::new(kind, msg).with_cause(self)
    }
}

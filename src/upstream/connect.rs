//! TCP + optional TLS to an upstream; the stream type pools hold.

use std::io;
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use rustls::ClientConfig;
use rustls_pki_types::ServerName;

use super::UpstreamError;
use crate::shard::net::{TcpStream, connect, idle_and_open};
use crate::shard::rt::ReadUninit;
use crate::shard::{self};

/// An upstream byte stream: plain TCP or TLS over TCP.
pub enum UpStream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS.
    Tls(Box<futures_rustls::client::TlsStream<TcpStream>>),
}

impl UpStream {
    /// Whether an idle connection has nothing waiting: no close and no bytes (over TLS, such
    /// bytes are most likely a close_notify).
    pub fn idle_alive(&self) -> bool {
        match self {
            Self::Plain(s) => idle_and_open(s),
            Self::Tls(t) => idle_and_open(t.get_ref().0),
        }
    }

    /// Whether TLS ALPN chose HTTP/2.
    pub fn alpn_h2(&self) -> bool {
        match self {
            Self::Plain(_) => false,
            Self::Tls(t) => t.get_ref().1.alpn_protocol() == Some(b"h2"),
        }
    }
}

/// A rustls client config with an explicit crypto provider, trusting the webpki roots, or
/// only the CA certificates in the PEM file `ca_pem` when given.
pub fn tls_client_config(
    alpn: &[&[u8]],
    ca_pem: Option<&str>,
) -> Result<Arc<ClientConfig>, rustls::Error> {
    let roots = match ca_pem {
        None => rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.to_vec(),
        },
        Some(path) => {
            use rustls_pki_types::CertificateDer;
            use rustls_pki_types::pem::PemObject;
            let mut store = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| rustls::Error::General(format!("{path}: {e}")))?;
            for cert in certs {
                let cert = cert.map_err(|e| rustls::Error::General(format!("{path}: {e}")))?;
                store.add(cert)?;
            }
            if store.is_empty() {
                return Err(rustls::Error::General(format!(
                    "{path}: no CA certificate found"
                )));
            }
            store
        }
    };
    let mut cfg =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_root_certificates(roots)
            .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(cfg))
}

/// Connect to the first reachable address, then TLS if `tls` is given. The whole thing is
/// bounded by `timeout`.
pub async fn open(
    addrs: &[SocketAddr],
    tls: Option<(&Arc<ClientConfig>, &str)>,
    timeout: Duration,
) -> Result<UpStream, UpstreamError> {
    let fut = async {
        let mut last = None;
        let mut tcp = None;
        for addr in addrs {
            match connect(*addr, timeout).await {
                Ok(s) => {
                    tcp = Some(s);
                    break;
                }
                Err(e) => last = Some(e),
            }
        }
        let tcp = match (tcp, last) {
            (Some(s), _) => s,
            (None, Some(e)) => return Err(UpstreamError::Connect(e)),
            (None, None) => return Err(UpstreamError::NoAddress("endpoint".into())),
        };
        match tls {
            None => Ok(UpStream::Plain(tcp)),
            Some((cfg, host)) => {
                let name = ServerName::try_from(host.to_owned()).map_err(|e| {
                    UpstreamError::Tls(io::Error::new(io::ErrorKind::InvalidInput, e))
                })?;
                let s = futures_rustls::TlsConnector::from(cfg.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(UpstreamError::Tls)?;
                Ok(UpStream::Tls(Box::new(s)))
            }
        }
    };
    match shard::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(UpstreamError::Timeout("connect", timeout)),
    }
}

impl ReadUninit for UpStream {
    fn poll_read_uninit(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [MaybeUninit<u8>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read_uninit(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_read_uninit(cx, buf),
        }
    }
}

impl AsyncRead for UpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Self::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_flush(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Plain(s) => Pin::new(s).poll_close(cx),
            Self::Tls(s) => Pin::new(&mut **s).poll_close(cx),
        }
    }
}

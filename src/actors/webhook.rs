//! The budget alert webhook: one JSON POST over HTTP/1.1 to a configured `http://` URL, on
//! the control plane's runtime, bounded in time. Failures are counted and logged, never
//! retried into a storm.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::Full;
use hyper_util::rt::TokioIo;

/// Longest time one POST may take, connect to answer.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// POST `body` (JSON) to `url`; the answer's status, or why there is none.
pub async fn post(url: &Uri, body: Vec<u8>) -> Result<u16, String> {
    let send = async {
        let host = url.host().ok_or("no host")?;
        let port = url.port_u16().unwrap_or(80);
        let stream = tokio::net::TcpStream::connect((host, port))
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("handshake: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = url.path_and_query().map_or("/", |p| p.as_str());
        let req = Request::post(path)
            .header(
                http::header::HOST,
                url.authority().map_or(host, |a| a.as_str()),
            )
            .header(http::header::CONTENT_TYPE, "application/json")
            .header(http::header::USER_AGENT, "shardgate-budget-webhook")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("request: {e}"))?;
        let res = sender
            .send_request(req)
            .await
            .map_err(|e| format!("send: {e}"))?;
        Ok::<u16, String>(res.status().as_u16())
    };
    tokio::time::timeout(TIMEOUT, send)
        .await
        .map_err(|_| format!("no answer in {} s", TIMEOUT.as_secs()))?
}

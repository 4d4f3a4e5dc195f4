//! An upstream response body, whichever protocol carried it.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::UpstreamError;
use super::h1::H1Body;

/// An upstream response body: read on the HTTP/1.1 connection itself, or an HTTP/2 stream.
pub enum UpBody {
    /// HTTP/1.1, read by the polling task.
    H1(H1Body),
    /// HTTP/2, from hyper's connection task.
    H2(Incoming),
}

impl Body for UpBody {
    type Data = Bytes;
    type Error = UpstreamError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, UpstreamError>>> {
        match self.get_mut() {
            Self::H1(b) => Pin::new(b).poll_frame(cx),
            Self::H2(b) => Pin::new(b)
                .poll_frame(cx)
                .map(|f| f.map(|r| r.map_err(UpstreamError::Http))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::H1(b) => b.is_end_stream(),
            Self::H2(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::H1(b) => b.size_hint(),
            Self::H2(b) => b.size_hint(),
        }
    }
}

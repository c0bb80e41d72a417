//! Message bodies the outpost sends, as one type for hyper: bytes it wrote itself (pages,
//! empty forward-auth answers), or in proxy mode a peer's body streamed through as it arrives
//! (a client's upload to the upstream, the upstream's answer to the client), never buffered.

use bytes::Bytes;
use std::pin::Pin;
use std::task::{Context, Poll};

use http_body_util::Full;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};

/// Bytes written here, or a stream passed through.
#[derive(Debug)]
pub enum Body {
    Full(Full<Bytes>),
    Stream(Incoming),
}

impl Body {
    pub fn new(bytes: Bytes) -> Body {
        Body::Full(Full::new(bytes))
    }

    pub fn empty() -> Body {
        Body::new(Bytes::new())
    }
}

impl HttpBody for Body {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Body::Full(b) => Pin::new(b).poll_frame(cx).map_err(|never| match never {}),
            Body::Stream(b) => Pin::new(b).poll_frame(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Full(b) => b.is_end_stream(),
            Body::Stream(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Full(b) => b.size_hint(),
            Body::Stream(b) => b.size_hint(),
        }
    }
}

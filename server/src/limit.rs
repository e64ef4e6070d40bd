//! Request messages checked as etcd's gRPC server (grpc-go) checks them, for every
//! service, before any decoder: a layer ([`RequestCheckLayer`]) wraps each request
//! body in a [`CheckedBody`], which follows the gRPC message prefixes
//! (`[flag][u32 BE length]`) as the bytes arrive and fails the body with etcd's
//! status at the first message that grpc-go would refuse:
//!
//! - longer than the receive limit: RESOURCE_EXHAUSTED, "grpc: received message
//!   larger than max (N vs. M)", from its prefix alone, before its bytes are read
//!   (tonic would read up to its own limit, then answer OUT_OF_RANGE);
//! - a compression flag other than 0 and 1: INTERNAL, "grpc: received unexpected
//!   payload format N"; the flag 1 without a `grpc-encoding`: INTERNAL, "grpc:
//!   compressed flag set with identity or empty encoding";
//! - cut short by the end of the stream: INTERNAL, "unexpected EOF".
//!
//! A body error that is a [`Status`] is what tonic's decoder (and so a unary
//! service, or the Watch service's request stream) answers with.

use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use http_body::Frame;
use tonic::Status;

/// The layer that checks request messages against `max` bytes.
#[derive(Clone, Copy, Debug)]
pub struct RequestCheckLayer {
    max: usize,
}

impl RequestCheckLayer {
    /// Refusing messages longer than `max` bytes.
    pub fn new(max: usize) -> Self {
        RequestCheckLayer { max }
    }
}

impl<S> tower_layer::Layer<S> for RequestCheckLayer {
    type Service = RequestCheck<S>;

    fn layer(&self, inner: S) -> RequestCheck<S> {
        RequestCheck { inner, max: self.max }
    }
}

/// The service of [`RequestCheckLayer`].
#[derive(Clone, Debug)]
pub struct RequestCheck<S> {
    inner: S,
    max: usize,
}

impl<S> tower_service::Service<http::Request<tonic::body::Body>> for RequestCheck<S>
where
    S: tower_service::Service<http::Request<tonic::body::Body>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<tonic::body::Body>) -> S::Future {
        // A compressed message is the decoder's business when the request names an
        // encoding (every service refuses those: none is enabled).
        let encoded = req.headers().get("grpc-encoding").is_some_and(|v| v.as_bytes() != b"identity");
        let max = self.max;
        self.inner.call(req.map(|b| tonic::body::Body::new(CheckedBody::new(b, max, encoded))))
    }
}

/// A request body whose gRPC messages are checked as they arrive (see the module
/// documentation).
pub struct CheckedBody {
    inner: tonic::body::Body,
    max: usize,
    encoded: bool,
    /// The prefix being read, and how much of it.
    prefix: [u8; 5],
    have: usize,
    /// Bytes of the current message still to come.
    left: usize,
    failed: bool,
}

impl CheckedBody {
    /// Checks `inner` against `max` bytes per message; `encoded`: the request names a
    /// compression (the flag 1 is then allowed).
    pub fn new(inner: tonic::body::Body, max: usize, encoded: bool) -> Self {
        CheckedBody { inner, max, encoded, prefix: [0; 5], have: 0, left: 0, failed: false }
    }

    fn scan(&mut self, mut data: &[u8]) -> Result<(), Status> {
        while !data.is_empty() {
            if self.left > 0 {
                let n = self.left.min(data.len());
                self.left -= n;
                data = &data[n..];
                continue;
            }
            let n = (5 - self.have).min(data.len());
            self.prefix[self.have..self.have + n].copy_from_slice(&data[..n]);
            self.have += n;
            data = &data[n..];
            if self.have < 5 {
                break;
            }
            self.have = 0;
            let len = u32::from_be_bytes([self.prefix[1], self.prefix[2], self.prefix[3], self.prefix[4]]) as usize;
            // grpc-go checks the length first.
            if len > self.max {
                return Err(Status::resource_exhausted(format!(
                    "grpc: received message larger than max ({len} vs. {})",
                    self.max
                )));
            }
            match self.prefix[0] {
                0 => {}
                1 if self.encoded => {}
                1 => return Err(Status::internal("grpc: compressed flag set with identity or empty encoding")),
                f => return Err(Status::internal(format!("grpc: received unexpected payload format {f}"))),
            }
            self.left = len;
        }
        Ok(())
    }
}

impl http_body::Body for CheckedBody {
    type Data = Bytes;
    type Error = Status;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, Status>>> {
        if self.failed {
            return Poll::Ready(None);
        }
        let r = ready!(Pin::new(&mut self.inner).poll_frame(cx));
        Poll::Ready(match r {
            Some(Ok(frame)) => {
                if let Some(data) = frame.data_ref() {
                    if let Err(status) = self.scan(data) {
                        self.failed = true;
                        return Poll::Ready(Some(Err(status)));
                    }
                }
                Some(Ok(frame))
            }
            Some(Err(e)) => Some(Err(e)),
            None if self.have > 0 || self.left > 0 => {
                self.failed = true;
                Some(Err(Status::internal("unexpected EOF")))
            }
            None => None,
        })
    }

    fn is_end_stream(&self) -> bool {
        self.failed || self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(max: usize, encoded: bool, chunks: &[&[u8]]) -> Result<(), Status> {
        let mut b = CheckedBody::new(tonic::body::Body::empty(), max, encoded);
        for c in chunks {
            b.scan(c)?;
        }
        Ok(())
    }

    #[test]
    fn messages_are_checked_across_chunks() {
        // Two messages of 3 and 2 bytes, split anywhere.
        let all = [0, 0, 0, 0, 3, 1, 2, 3, 0, 0, 0, 0, 2, 4, 5];
        for cut in 0..all.len() {
            assert!(scan(3, false, &[&all[..cut], &all[cut..]]).is_ok(), "cut at {cut}");
        }
        let big = [0, 0, 0, 0, 4];
        let e = scan(3, false, &[&big[..2], &big[2..]]).expect_err("too large");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        assert_eq!(e.message(), "grpc: received message larger than max (4 vs. 3)");
        // Length first, as grpc-go: a bad flag with a huge length is too large.
        let e = scan(3, false, &[b"hello"]).expect_err("text");
        assert_eq!(e.code(), tonic::Code::ResourceExhausted);
        let e = scan(3, false, &[&[2, 0, 0, 0, 1]]).expect_err("flag 2");
        assert_eq!((e.code(), e.message()), (tonic::Code::Internal, "grpc: received unexpected payload format 2"));
        let e = scan(3, false, &[&[1, 0, 0, 0, 1]]).expect_err("flag 1");
        assert_eq!(e.code(), tonic::Code::Internal);
        assert!(scan(3, true, &[&[1, 0, 0, 0, 1, 9]]).is_ok(), "flag 1 with an encoding is the decoder's business");
    }
}

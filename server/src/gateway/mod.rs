//! etcd 3.4's HTTP/JSON gateway on the gRPC listener, for clients that do not speak
//! gRPC (`curl`, HA managers, API gateways): `POST /v3/kv/range` and the rest of
//! etcd's paths (`routes.rs`), `GET /version` and `GET /health`.
//!
//! **Routing.** One listener serves both, over HTTP/1.1 and HTTP/2 (h2c, prior
//! knowledge). [`GatewayLayer`] is the outermost layer of the tonic server: a
//! request whose `content-type` starts with `application/grpc` goes on to tonic's
//! stack exactly as before (the request check of [`crate::limit`], then the
//! services); any other is answered by the [`Gateway`]. gRPC requests pay one
//! header comparison.
//!
//! **Calls.** The gateway calls the very service implementations the gRPC server
//! registers, through their tonic-generated traits (`Kv`, `Lease`, `Cluster`,
//! `Maintenance`, `Auth`), and the Watch service's own stream for `/v3/watch`
//! (`watch.rs`): a JSON request becomes the prost message (pbjson's serde mapping,
//! generated in `build.rs`), the response is written back as etcd's gateway writes
//! it (`json.rs`), a failed call as its error body (`errors.rs`); streaming calls go
//! through `stream.rs`.
//!
//! **Fidelity.** Bodies, status codes and the content type are etcd 3.4.23's
//! (grpc-gateway v1.9 with `JSONPb{OrigName: true}`): proto field names, zero
//! fields left out, 64-bit integers as strings, bytes as base64, enums by name;
//! errors `{"error":..,"message":..,"code":..}` with grpc-gateway's HTTP status.
//! Differences: the words of a JSON type error (serde's, not Go's: the status and
//! code are the same), no `Trailer`/`Grpc-Trailer-*` headers on error answers, and
//! header names in lower case on HTTP/1.1.

mod errors;
mod json;
mod routes;
mod stream;
mod watch;

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, Either, FutureExt, Map};
use tonic::body::Body;

pub use routes::Gateway;

/// Whether a request is gRPC (by its `content-type`), for tonic's services.
pub fn is_grpc<B>(req: &http::Request<B>) -> bool {
    req.headers().get(http::header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The layer that sends every request that is not gRPC to a [`Gateway`].
#[derive(Clone)]
pub struct GatewayLayer {
    gateway: Arc<Gateway>,
}

impl GatewayLayer {
    /// Sending to `gateway`.
    pub fn new(gateway: Gateway) -> Self {
        GatewayLayer { gateway: Arc::new(gateway) }
    }
}

impl<S> tower_layer::Layer<S> for GatewayLayer {
    type Service = Dispatch<S>;

    fn layer(&self, inner: S) -> Dispatch<S> {
        Dispatch { inner, gateway: Arc::clone(&self.gateway) }
    }
}

/// The service of [`GatewayLayer`]: gRPC to `inner`, the rest to the gateway.
#[derive(Clone)]
pub struct Dispatch<S> {
    inner: S,
    gateway: Arc<Gateway>,
}

type Answer<E> = fn(http::Response<Body>) -> Result<http::Response<Body>, E>;

impl<S> tower_service::Service<http::Request<Body>> for Dispatch<S>
where
    S: tower_service::Service<http::Request<Body>, Response = http::Response<Body>>,
{
    type Response = http::Response<Body>;
    type Error = S::Error;
    type Future = Either<S::Future, Map<BoxFuture<'static, http::Response<Body>>, Answer<S::Error>>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        if is_grpc(&req) {
            Either::Left(self.inner.call(req))
        } else {
            Either::Right(self.gateway.handle(req).map(Ok as Answer<S::Error>))
        }
    }
}

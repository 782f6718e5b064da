//! Bearer-token authentication as a tower layer on the whole server, so every inference
//! service is covered by one check. Health and reflection stay open: orchestrators probe
//! health without credentials, and reflection reveals only the public API.

use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use http::{Request, Response};
use tower::{Layer, Service};

/// Paths that never need a token.
const OPEN_PREFIXES: &[&str] = &["/grpc.health.v1.", "/grpc.reflection."];

/// Requires `authorization: Bearer <token>` when a token is configured.
#[derive(Clone, Debug, Default)]
pub struct BearerAuthLayer {
    token: Option<Arc<str>>,
}

impl BearerAuthLayer {
    /// Checks requests against `token`; `None` lets every request through.
    pub fn new(token: Option<String>) -> Self {
        Self {
            token: token.filter(|t| !t.is_empty()).map(Arc::from),
        }
    }
}

impl<S> Layer<S> for BearerAuthLayer {
    type Service = BearerAuth<S>;
    fn layer(&self, inner: S) -> Self::Service {
        BearerAuth {
            inner,
            token: self.token.clone(),
        }
    }
}

/// The service made by [`BearerAuthLayer`].
#[derive(Clone, Debug)]
pub struct BearerAuth<S> {
    inner: S,
    token: Option<Arc<str>>,
}

// === impl BearerAuth ===

/// Compares in time independent of where the first difference is.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl<S> BearerAuth<S> {
    fn check<B>(&self, req: &Request<B>) -> Result<(), tonic::Status> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let path = req.uri().path();
        if OPEN_PREFIXES.iter().any(|p| path.starts_with(p)) {
            return Ok(());
        }
        let presented = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        match presented {
            Some(p) if same(p.trim().as_bytes(), token.as_bytes()) => Ok(()),
            Some(_) => Err(tonic::Status::unauthenticated(
                "authorization: the bearer token is not valid",
            )),
            None => Err(tonic::Status::unauthenticated(
                "authorization: this server requires `authorization: Bearer <token>`",
            )),
        }
    }
}

impl<S, B, RB> Service<Request<B>> for BearerAuth<S>
where
    S: Service<Request<B>, Response = Response<RB>> + Send,
    S::Future: Send + 'static,
    RB: Default + Send + 'static,
{
    type Response = Response<RB>;
    type Error = S::Error;
    type Future = BoxFuture<'static, Result<Response<RB>, S::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        match self.check(&req) {
            Ok(()) => self.inner.call(req).boxed(),
            Err(status) => {
                let response = status.into_http::<RB>();
                async move { Ok(response) }.boxed()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(path: &str, auth: Option<&str>) -> Request<()> {
        let mut b = Request::builder().uri(path);
        if let Some(a) = auth {
            b = b.header("authorization", a);
        }
        b.body(()).unwrap()
    }

    #[test]
    fn tokens_are_checked_except_on_health_and_reflection() {
        let auth = BearerAuthLayer::new(Some("s3cret".into())).layer(());
        assert!(
            auth.check(&req("/edgeinfer.v1.Inference/Infer", Some("Bearer s3cret")))
                .is_ok()
        );
        let e = auth
            .check(&req("/edgeinfer.v1.Inference/Infer", Some("Bearer nope")))
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::Unauthenticated);
        let e = auth
            .check(&req("/inference.GRPCInferenceService/ModelInfer", None))
            .unwrap_err();
        assert!(e.message().contains("Bearer <token>"));
        assert!(
            auth.check(&req("/grpc.health.v1.Health/Check", None))
                .is_ok()
        );
        let open = BearerAuthLayer::new(None).layer(());
        assert!(
            open.check(&req("/edgeinfer.v1.Inference/Infer", None))
                .is_ok()
        );
    }
}

//! Bearer-token authentication as a tower layer on the whole server, so every service is
//! covered by one check. Health and reflection stay open to callers that present no token:
//! orchestrators probe health without credentials, and reflection reveals only the public API.
//! A token that is presented is always checked, on every path: a client (the edge's prober)
//! with a wrong token learns so from its health checks too, instead of believing the cloud is
//! fine.
//!
//! Tokens are compared in constant time over their whole length (`subtle`), exactly as
//! presented: no trimming, so a token with stray whitespace is a different token.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::{BoxFuture, FutureExt};
use http::{Request, Response};
use tower::{Layer, Service};

/// Paths that never need a token: gRPC health and reflection, and OIP's HTTP health
/// (`/v2/health/live`, `/v2/health/ready`), which orchestrators probe without credentials.
const OPEN_PREFIXES: &[&str] = &["/grpc.health.v1.", "/grpc.reflection.", "/v2/health/"];

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

/// Compares in time independent of the contents. `subtle` compares lengths first (a length is
/// no secret worth hiding: it is fixed by the deployment), then every byte.
fn same(a: &[u8], b: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    a.ct_eq(b).into()
}

/// Largest token file read: a token is a line, not a document.
pub const MAX_TOKEN_FILE_BYTES: u64 = 4096;

/// A token setting that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Both the value and the file were given.
    #[error("{flag} and {flag}-file are both set; give one")]
    Both {
        /// The value's flag and environment twin.
        flag: String,
    },
    /// The file could not be read.
    #[error("{flag}-file {path}: cannot read it")]
    Read {
        /// The value's flag.
        flag: String,
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is larger than a token.
    #[error(
        "{flag}-file {path}: larger than {MAX_TOKEN_FILE_BYTES} bytes; a token file holds one line"
    )]
    TooLarge {
        /// The value's flag.
        flag: String,
        /// The file.
        path: String,
    },
    /// The token cannot travel in an HTTP header, or is empty.
    #[error("{flag}: the token is empty or has characters not allowed in an HTTP header")]
    Invalid {
        /// The value's flag.
        flag: String,
    },
}

/// The token a setting gives: its value, or the contents of its file (one line; a final line
/// break, as editors and `kubectl create secret --from-file` leave it, is not part of the
/// token). `None` when neither is set. `flag` names the setting (`--auth-token`), the file's
/// flag is `flag` + `-file`.
pub fn token_setting(
    value: &str,
    file: Option<&Path>,
    flag: &str,
) -> Result<Option<String>, TokenError> {
    let token = match (value.is_empty(), file) {
        (true, None) => return Ok(None),
        (false, Some(_)) => {
            return Err(TokenError::Both {
                flag: flag.to_string(),
            });
        }
        (false, None) => value.to_string(),
        (true, Some(path)) => {
            let shown = path.display().to_string();
            let read_error = |source| TokenError::Read {
                flag: flag.to_string(),
                path: shown.clone(),
                source,
            };
            let mut bytes = Vec::new();
            std::fs::File::open(path)
                .and_then(|f| f.take(MAX_TOKEN_FILE_BYTES + 1).read_to_end(&mut bytes))
                .map_err(read_error)?;
            if bytes.len() as u64 > MAX_TOKEN_FILE_BYTES {
                return Err(TokenError::TooLarge {
                    flag: flag.to_string(),
                    path: shown,
                });
            }
            let text = String::from_utf8(bytes).map_err(|_| TokenError::Invalid {
                flag: flag.to_string(),
            })?;
            let line = text.strip_suffix('\n').unwrap_or(&text);
            line.strip_suffix('\r').unwrap_or(line).to_string()
        }
    };
    let valid =
        !token.is_empty() && http::HeaderValue::from_str(&format!("Bearer {token}")).is_ok();
    if valid {
        Ok(Some(token))
    } else {
        Err(TokenError::Invalid {
            flag: flag.to_string(),
        })
    }
}

impl BearerAuthLayer {
    /// Checks one request's `authorization` header; the OIP HTTP front end calls it directly
    /// so that both listeners apply the same rule.
    pub fn check<B>(&self, req: &Request<B>) -> Result<(), tonic::Status> {
        check(self.token.as_deref(), req)
    }
}

impl<S> BearerAuth<S> {
    fn check<B>(&self, req: &Request<B>) -> Result<(), tonic::Status> {
        check(self.token.as_deref(), req)
    }
}

/// The one rule: no token configured lets everything through; a presented token must match
/// on every path; an absent one is allowed only on the open paths.
fn check<B>(token: Option<&str>, req: &Request<B>) -> Result<(), tonic::Status> {
    let Some(token) = token else {
        return Ok(());
    };
    let header = req.headers().get(http::header::AUTHORIZATION);
    let open = OPEN_PREFIXES
        .iter()
        .any(|p| req.uri().path().starts_with(p));
    let Some(header) = header else {
        return if open {
            Ok(())
        } else {
            Err(tonic::Status::unauthenticated(
                "authorization: this server requires `authorization: Bearer <token>`",
            ))
        };
    };
    match header.as_bytes().strip_prefix(b"Bearer ") {
        Some(p) if same(p, token.as_bytes()) => Ok(()),
        _ => Err(tonic::Status::unauthenticated(
            "authorization: the bearer token is not valid",
        )),
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

    #[test]
    fn tokens_come_from_a_value_or_a_file_of_one_line() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("token");
        std::fs::write(&file, "abc\n").unwrap();
        assert_eq!(token_setting("", None, "--t").unwrap(), None);
        assert_eq!(
            token_setting("xyz", None, "--t").unwrap().as_deref(),
            Some("xyz")
        );
        assert_eq!(
            token_setting("", Some(&file), "--t").unwrap().as_deref(),
            Some("abc")
        );
        let e = token_setting("xyz", Some(&file), "--t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("--t and --t-file"), "{e}");
        std::fs::write(&file, vec![b'a'; 5000]).unwrap();
        let e = token_setting("", Some(&file), "--t")
            .unwrap_err()
            .to_string();
        assert!(e.contains("larger than 4096"), "{e}");
        std::fs::write(&file, "").unwrap();
        assert!(token_setting("", Some(&file), "--t").is_err());
        let e = token_setting("", Some(&dir.path().join("none")), "--t").unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        assert!(token_setting("bad\ntoken", None, "--t").is_err());
    }

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
        let e = auth
            .check(&req("/grpc.health.v1.Health/Check", Some("Bearer nope")))
            .unwrap_err();
        assert_eq!(
            e.code(),
            tonic::Code::Unauthenticated,
            "a wrong token is refused everywhere"
        );
        for near in [
            "Bearer s3cret ",
            "Bearer  s3cret",
            "Bearer s3cre",
            "Bearer s3cret2",
            "s3cret",
        ] {
            let e = auth
                .check(&req("/edgeinfer.v1.EdgeAdmin/GetStatus", Some(near)))
                .unwrap_err();
            assert_eq!(e.code(), tonic::Code::Unauthenticated, "{near:?}");
        }
        let open = BearerAuthLayer::new(None).layer(());
        assert!(
            open.check(&req("/edgeinfer.v1.Inference/Infer", None))
                .is_ok()
        );
    }
}

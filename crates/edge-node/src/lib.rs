//! The edge node: serves its own quantized model and routes each request between that model and
//! the cloud over the simulated link, falling back to its own answer when the cloud cannot
//! answer in time.
//!
//! Invariant: the router knows nothing of MNIST; it works from the model's metadata and
//! probabilities. The link is reached only through `edgeinfer_linksim`'s tower layer.
#![forbid(unsafe_code)]

//! Serving pieces shared by the edge and cloud nodes, so neither duplicates them.
//!
//! # Layout
//!
//! - [`answer`]: the domain types of an answer (tier, reason, placement, timing), converted to
//!   the wire only by the front ends and the edge's cloud client.
//! - [`input`]: untrusted request bytes (images, pixels, tensors) to a model's input.
//! - [`batcher`]: the dynamic batcher: bounded queue, whatever-is-waiting batches, worker
//!   threads off the async runtime.
//! - [`models`]: the model in service, swapped atomically under load (hot swap).
//! - [`model_admin`]: the `ModelAdmin` service, and reloads on SIGHUP and on file changes.
//! - [`node`]: the [`node::Node`] trait the front ends call, and the decoded [`node::Call`].
//! - [`native`]: the native `edgeinfer.v1.Inference` service over a node.
//! - [`oip`]: the Open Inference Protocol service over a node.
//! - [`oip_http`]: the Open Inference Protocol over HTTP/REST, transcoded onto [`oip`].
//! - [`oip_json`]: the HTTP binding's JSON (and binary tensors) to and from OIP messages.
//! - [`oip_models`]: its `ModelConfig` and `ModelStatistics` calls.
//! - [`repository`]: a model repository in Triton's layout, scanned with bounds.
//! - [`error`]: serving errors and their one mapping to gRPC codes.
//! - [`metrics`]: Prometheus metrics and their HTTP endpoint.
//! - [`auth`]: bearer-token check as a tower layer.
//! - [`tls`]: TLS and mutual TLS settings from PEM files, for servers and clients.
//! - [`server`]: one listener with the node's services, health and reflection.
//! - [`cli`]: what the server binaries share: exit 64 on bad settings, logging, binding.
//! - [`shutdown`]: the process's shutdown signal (SIGTERM or Ctrl-C).
//! - [`telemetry`]: logging, OTLP span export, W3C trace context in and out.
//!
//! Invariant: nothing here knows about MNIST or about routing decisions; it sees models
//! through `edgeinfer_model::Classifier` and their metadata.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod answer;
pub mod auth;
pub mod batcher;
pub mod cli;
pub mod error;
pub mod flags;
pub mod input;
pub mod limits;
pub mod metrics;
pub mod model_admin;
pub mod models;
pub mod native;
pub mod node;
pub mod oip;
pub mod oip_http;
pub mod oip_json;
pub mod oip_models;
pub mod repository;
pub mod server;
pub mod shutdown;
pub mod telemetry;
pub mod throttle;
pub mod tls;

//! Serving pieces shared by the edge and cloud nodes, so neither duplicates them: the dynamic
//! batcher, input decoding and validation, the Open Inference Protocol adapter, and the wiring
//! of health, reflection and Prometheus metrics.
//!
//! Invariant: nothing here knows about MNIST or about routing decisions; it sees models through
//! `edgeinfer_model::Classifier` and their metadata.
#![forbid(unsafe_code)]

//! Triton's per-model metrics (`nv_inference_*`), so that dashboards and alerts written for
//! Triton read an edgeinfer node unchanged.
//!
//! Triton exposes these in the Prometheus text format, counters without a `_total` suffix
//! (`nv_inference_request_success{model="m",version="1"} 12`). The OpenMetrics encoder of
//! `prometheus-client` always appends `_total` to a counter, which would rename every series,
//! so this family is rendered here, in the classic text format, and the node's exposition is
//! served in that format as a whole (see [`super::Exposition`]).
//!
//! A node runs one model, so its label set is fixed when the node starts: it is escaped once
//! into `labels`, and counting is one relaxed atomic add per figure, with no lookup and no
//! allocation per request. Durations are cumulative microseconds, as Triton's are; averages
//! come from dividing their rates by the matching count's.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

/// Triton's metrics of one model. Cloning shares the figures.
#[derive(Clone, Debug)]
pub struct TritonMetrics {
    inner: Arc<Figures>,
}

#[derive(Debug)]
struct Figures {
    /// `{model="...",version="..."}`, escaped once.
    labels: String,
    /// Requests answered.
    success: AtomicU64,
    /// Requests refused or failed.
    failure: AtomicU64,
    /// Inferences computed (a batch of n counts n).
    count: AtomicU64,
    /// Forward passes.
    exec_count: AtomicU64,
    /// Time from receiving a request to answering it, summed.
    request_us: AtomicU64,
    /// Time computed requests waited in the queue, summed.
    queue_us: AtomicU64,
    /// Forward-pass time of each computed request (its whole batch's pass), summed.
    compute_infer_us: AtomicU64,
    /// The batcher's queue depth, shared with edgeinfer's own gauge.
    pending: Gauge,
}

/// One exposed family: name, type, help, and how to read its value.
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&Figures) -> i64,
}

fn load(a: &AtomicU64) -> i64 {
    i64::try_from(a.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
}

const FAMILIES: &[Family] = &[
    Family {
        name: "nv_inference_request_success",
        kind: "counter",
        help: "Number of successful inference requests, all batch sizes",
        value: |f| load(&f.success),
    },
    Family {
        name: "nv_inference_request_failure",
        kind: "counter",
        help: "Number of failed inference requests, all batch sizes",
        value: |f| load(&f.failure),
    },
    Family {
        name: "nv_inference_count",
        kind: "counter",
        help: "Number of inferences performed (does not include cached requests)",
        value: |f| load(&f.count),
    },
    Family {
        name: "nv_inference_exec_count",
        kind: "counter",
        help: "Number of model executions performed (does not include cached requests)",
        value: |f| load(&f.exec_count),
    },
    Family {
        name: "nv_inference_request_duration_us",
        kind: "counter",
        help: "Cumulative inference request duration in microseconds (includes cached requests)",
        value: |f| load(&f.request_us),
    },
    Family {
        name: "nv_inference_queue_duration_us",
        kind: "counter",
        help: "Cumulative inference queuing duration in microseconds (includes cached requests)",
        value: |f| load(&f.queue_us),
    },
    Family {
        name: "nv_inference_compute_infer_duration_us",
        kind: "counter",
        help: "Cumulative compute inference duration in microseconds (does not include cached \
               requests)",
        value: |f| load(&f.compute_infer_us),
    },
    Family {
        name: "nv_inference_pending_request_count",
        kind: "gauge",
        help: "Instantaneous number of pending requests awaiting execution per-model",
        value: |f| f.pending.get(),
    },
];

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Escapes a label value for the text format: backslash, double quote and newline.
fn escape_label(value: &str, out: &mut String) {
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

impl TritonMetrics {
    /// The metrics of the model `model` at `version`; `pending` is the batcher's queue depth.
    pub fn new(model: &str, version: &str, pending: Gauge) -> Self {
        let mut labels = String::from("{model=\"");
        escape_label(model, &mut labels);
        labels.push_str("\",version=\"");
        escape_label(version, &mut labels);
        labels.push_str("\"}");
        Self {
            inner: Arc::new(Figures {
                labels,
                success: AtomicU64::new(0),
                failure: AtomicU64::new(0),
                count: AtomicU64::new(0),
                exec_count: AtomicU64::new(0),
                request_us: AtomicU64::new(0),
                queue_us: AtomicU64::new(0),
                compute_infer_us: AtomicU64::new(0),
                pending,
            }),
        }
    }

    /// Counts one answered request that took `elapsed` on this node.
    pub fn succeeded(&self, elapsed: Duration) {
        self.inner.success.fetch_add(1, Ordering::Relaxed);
        self.inner
            .request_us
            .fetch_add(micros(elapsed), Ordering::Relaxed);
    }

    /// Counts one refused or failed request.
    pub fn failed(&self) {
        self.inner.failure.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one forward pass over `n` requests that took `compute`.
    pub fn executed(&self, n: usize, compute: Duration) {
        let n = n as u64;
        self.inner.exec_count.fetch_add(1, Ordering::Relaxed);
        self.inner.count.fetch_add(n, Ordering::Relaxed);
        // Triton charges each request of a batch the batch's whole compute time.
        self.inner
            .compute_infer_us
            .fetch_add(micros(compute).saturating_mul(n), Ordering::Relaxed);
    }

    /// Counts the queue wait of one computed request.
    pub fn queued(&self, wait: Duration) {
        self.inner
            .queue_us
            .fetch_add(micros(wait), Ordering::Relaxed);
    }

    /// Appends the families in the Prometheus text format (version 0.0.4).
    pub fn render(&self, out: &mut String) {
        let f = &*self.inner;
        for family in FAMILIES {
            // Writing into a String cannot fail.
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name}{labels} {value}\n",
                name = family.name,
                help = family.help,
                kind = family.kind,
                labels = f.labels,
                value = (family.value)(f),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_render_under_triton_names_with_escaped_labels() {
        let pending = Gauge::default();
        let m = TritonMetrics::new("edge\"mlp", "1\\2", pending.clone());
        m.succeeded(Duration::from_micros(250));
        m.succeeded(Duration::from_micros(750));
        m.failed();
        m.executed(3, Duration::from_micros(100));
        m.queued(Duration::from_micros(40));
        pending.set(2);
        let mut text = String::new();
        m.render(&mut text);
        let labels = r#"{model="edge\"mlp",version="1\\2"}"#;
        for (name, value) in [
            ("nv_inference_request_success", 2),
            ("nv_inference_request_failure", 1),
            ("nv_inference_count", 3),
            ("nv_inference_exec_count", 1),
            ("nv_inference_request_duration_us", 1000),
            ("nv_inference_queue_duration_us", 40),
            ("nv_inference_compute_infer_duration_us", 300),
            ("nv_inference_pending_request_count", 2),
        ] {
            assert!(
                text.contains(&format!("\n{name}{labels} {value}\n")),
                "{name} {value} missing from\n{text}"
            );
        }
        assert!(text.contains("# TYPE nv_inference_request_success counter\n"));
        assert!(text.contains("# TYPE nv_inference_pending_request_count gauge\n"));
        assert!(!text.contains("_total"), "{text}");
    }
}

//! Triton's per-model metrics (`nv_inference_*`), so that dashboards and alerts written for
//! Triton read an edgeinfer node unchanged.
//!
//! Triton exposes these in the Prometheus text format, counters without a `_total` suffix
//! (`nv_inference_request_success{model="m",version="1"} 12`). The OpenMetrics encoder of
//! `prometheus-client` always appends `_total` to a counter, which would rename every series,
//! so this family is rendered here, in the classic text format, and the node's exposition is
//! served in that format as a whole (see [`super::Exposition`]).
//!
//! A node runs one model, one version at a time; a hot swap puts another version in service.
//! Each version has its own figures ([`TritonVersion`]), whose label set is escaped once into
//! `labels`: the batcher of a version counts its passes into that version's figures; the
//! front ends count an answer into the version that gave it (its `name@version`, found among
//! the few versions that served by one string comparison each under a read lock; another
//! model's answer, the cloud's on the edge, into the version in service) and a refusal into the
//! version in service. No allocation per request. Every version that
//! has served stays in the exposition, so a dashboard's per-version rates follow a swap as they
//! do on Triton. Durations are cumulative microseconds, as Triton's are; averages come from
//! dividing their rates by the matching count's.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;

/// Triton's metrics of one model, every version it has served. Cloning shares the figures.
#[derive(Clone, Debug)]
pub struct TritonMetrics {
    inner: Arc<Model>,
}

#[derive(Debug)]
struct Model {
    /// The model's name, as it appears in the labels.
    name: String,
    /// The batcher's queue depth, shared with edgeinfer's own gauge: shown for the version in
    /// service (the queue of a version swapped out drains within its requests' budgets).
    pending: Gauge,
    versions: RwLock<Versions>,
}

#[derive(Debug)]
struct Versions {
    /// The version in service: answers and refusals are counted here.
    current: Arc<Figures>,
    /// Every version that was ever in service, in that order (the current one included).
    all: Vec<Arc<Figures>>,
}

/// Triton's figures of one version of the model. Cloning shares them.
#[derive(Clone, Debug)]
pub struct TritonVersion {
    figures: Arc<Figures>,
}

#[derive(Debug)]
struct Figures {
    /// The version's name.
    version: String,
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
}

/// One exposed family: name, type, help, and how to read a version's value (`pending` is the
/// queue depth when the version is in service, else `None`).
struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    value: fn(&Figures, Option<&Gauge>) -> i64,
}

fn load(a: &AtomicU64) -> i64 {
    i64::try_from(a.load(Ordering::Relaxed)).unwrap_or(i64::MAX)
}

const FAMILIES: &[Family] = &[
    Family {
        name: "nv_inference_request_success",
        kind: "counter",
        help: "Number of successful inference requests, all batch sizes",
        value: |f, _| load(&f.success),
    },
    Family {
        name: "nv_inference_request_failure",
        kind: "counter",
        help: "Number of failed inference requests, all batch sizes",
        value: |f, _| load(&f.failure),
    },
    Family {
        name: "nv_inference_count",
        kind: "counter",
        help: "Number of inferences performed (does not include cached requests)",
        value: |f, _| load(&f.count),
    },
    Family {
        name: "nv_inference_exec_count",
        kind: "counter",
        help: "Number of model executions performed (does not include cached requests)",
        value: |f, _| load(&f.exec_count),
    },
    Family {
        name: "nv_inference_request_duration_us",
        kind: "counter",
        help: "Cumulative inference request duration in microseconds (includes cached requests)",
        value: |f, _| load(&f.request_us),
    },
    Family {
        name: "nv_inference_queue_duration_us",
        kind: "counter",
        help: "Cumulative inference queuing duration in microseconds (includes cached requests)",
        value: |f, _| load(&f.queue_us),
    },
    Family {
        name: "nv_inference_compute_infer_duration_us",
        kind: "counter",
        help: "Cumulative compute inference duration in microseconds (does not include cached \
               requests)",
        value: |f, _| load(&f.compute_infer_us),
    },
    Family {
        name: "nv_inference_pending_request_count",
        kind: "gauge",
        help: "Instantaneous number of pending requests awaiting execution per-model",
        value: |_, pending| pending.map_or(0, Gauge::get),
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

impl Figures {
    fn new(model: &str, version: &str) -> Self {
        let mut labels = String::from("{model=\"");
        escape_label(model, &mut labels);
        labels.push_str("\",version=\"");
        escape_label(version, &mut labels);
        labels.push_str("\"}");
        Figures {
            version: version.to_owned(),
            labels,
            success: AtomicU64::new(0),
            failure: AtomicU64::new(0),
            count: AtomicU64::new(0),
            exec_count: AtomicU64::new(0),
            request_us: AtomicU64::new(0),
            queue_us: AtomicU64::new(0),
            compute_infer_us: AtomicU64::new(0),
        }
    }

    /// Nothing counted yet.
    fn is_blank(&self) -> bool {
        [&self.success, &self.failure, &self.exec_count]
            .iter()
            .all(|a| a.load(Ordering::Relaxed) == 0)
    }
}

impl TritonMetrics {
    /// The metrics of the model `model`, `version` in service; `pending` is the batcher's
    /// queue depth.
    pub fn new(model: &str, version: &str, pending: Gauge) -> Self {
        let current = Arc::new(Figures::new(model, version));
        Self {
            inner: Arc::new(Model {
                name: model.to_owned(),
                pending,
                versions: RwLock::new(Versions {
                    all: vec![current.clone()],
                    current,
                }),
            }),
        }
    }

    fn versions(&self) -> std::sync::RwLockReadGuard<'_, Versions> {
        // Nothing panics while the lock is held; a poisoned lock is still consistent.
        self.inner
            .versions
            .read()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Puts `version` in service from now on (its figures continue where they were if it
    /// served before) and returns its figures, for its batcher.
    pub fn serve(&self, version: &str) -> TritonVersion {
        let mut v = self
            .inner
            .versions
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let figures = match v.all.iter().find(|f| f.version == version) {
            Some(f) => f.clone(),
            None => {
                let f = Arc::new(Figures::new(&self.inner.name, version));
                v.all.push(f.clone());
                f
            }
        };
        v.current = figures.clone();
        TritonVersion { figures }
    }

    /// The figures of the version in service.
    pub fn current(&self) -> TritonVersion {
        TritonVersion {
            figures: self.versions().current.clone(),
        }
    }

    /// Counts one answered request that took `elapsed` on this node, for the version that
    /// answered it: `answered_by` is the answer's `name@version`. An answer of another model
    /// (the cloud's, on the edge) counts for the version in service, as a request to this model.
    pub fn succeeded(&self, answered_by: &str, elapsed: Duration) {
        let v = self.versions();
        // A request finishing on a version just swapped out counts for that version.
        let figures = answered_by
            .rsplit_once('@')
            .filter(|(name, _)| *name == self.inner.name)
            .and_then(|(_, version)| v.all.iter().rev().find(|f| f.version == version))
            .unwrap_or(&v.current);
        figures.success.fetch_add(1, Ordering::Relaxed);
        figures
            .request_us
            .fetch_add(micros(elapsed), Ordering::Relaxed);
    }

    /// Counts one refused or failed request, for the version in service (no version answered).
    pub fn failed(&self) {
        self.versions()
            .current
            .failure
            .fetch_add(1, Ordering::Relaxed);
    }

    /// Appends the families in the Prometheus text format (version 0.0.4): each family once,
    /// with a line per version that was ever in service.
    pub fn render(&self, out: &mut String) {
        let v = self.versions();
        for family in FAMILIES {
            // Writing into a String cannot fail.
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n",
                name = family.name,
                help = family.help,
                kind = family.kind,
            );
            for f in &v.all {
                let current = Arc::ptr_eq(f, &v.current);
                // A version named at start and replaced before it counted anything (a
                // repository's directory name overriding the file's) is no series.
                if !current && f.is_blank() {
                    continue;
                }
                let pending = current.then_some(&self.inner.pending);
                let _ = writeln!(
                    out,
                    "{name}{labels} {value}",
                    name = family.name,
                    labels = f.labels,
                    value = (family.value)(f, pending),
                );
            }
        }
    }
}

impl TritonVersion {
    /// Counts one forward pass over `n` requests that took `compute`.
    pub fn executed(&self, n: usize, compute: Duration) {
        let f = &*self.figures;
        let n = n as u64;
        f.exec_count.fetch_add(1, Ordering::Relaxed);
        f.count.fetch_add(n, Ordering::Relaxed);
        // Triton charges each request of a batch the batch's whole compute time.
        f.compute_infer_us
            .fetch_add(micros(compute).saturating_mul(n), Ordering::Relaxed);
    }

    /// Counts the queue wait of one computed request.
    pub fn queued(&self, wait: Duration) {
        self.figures
            .queue_us
            .fetch_add(micros(wait), Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_render_under_triton_names_with_escaped_labels() {
        let pending = Gauge::default();
        let m = TritonMetrics::new("edge\"mlp", "1\\2", pending.clone());
        m.succeeded("edge\"mlp@1\\2", Duration::from_micros(250));
        m.succeeded("cloud-cnn@1", Duration::from_micros(750));
        m.failed();
        m.current().executed(3, Duration::from_micros(100));
        m.current().queued(Duration::from_micros(40));
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

    /// After a swap, answers and passes count under the new version; the old one keeps its
    /// figures and its line, without the queue depth; a version named and replaced before it
    /// counted anything has no line; a version served again continues its figures.
    #[test]
    fn figures_follow_the_version_in_service() {
        let pending = Gauge::default();
        let m = TritonMetrics::new("m", "file", pending.clone());
        let one = m.serve("1");
        m.succeeded("m@1", Duration::from_micros(10));
        one.executed(1, Duration::from_micros(5));
        let two = m.serve("2");
        m.succeeded("m@2", Duration::from_micros(20));
        // Another model's answer counts for the version in service.
        m.succeeded("cloud-cnn@1", Duration::from_micros(20));
        // A request that finished on version 1 after the swap counts for version 1.
        m.succeeded("m@1", Duration::from_micros(30));
        m.failed();
        two.executed(2, Duration::from_micros(7));
        // A pass of the old version's batcher finishing after the swap stays the old version's.
        one.queued(Duration::from_micros(3));
        pending.set(4);
        let mut text = String::new();
        m.render(&mut text);
        for line in [
            r#"nv_inference_request_success{model="m",version="1"} 2"#,
            r#"nv_inference_request_success{model="m",version="2"} 2"#,
            r#"nv_inference_request_duration_us{model="m",version="1"} 40"#,
            r#"nv_inference_request_duration_us{model="m",version="2"} 40"#,
            r#"nv_inference_request_failure{model="m",version="1"} 0"#,
            r#"nv_inference_request_failure{model="m",version="2"} 1"#,
            r#"nv_inference_count{model="m",version="2"} 2"#,
            r#"nv_inference_queue_duration_us{model="m",version="1"} 3"#,
            r#"nv_inference_pending_request_count{model="m",version="1"} 0"#,
            r#"nv_inference_pending_request_count{model="m",version="2"} 4"#,
        ] {
            assert!(
                text.contains(&format!("{line}\n")),
                "{line} missing from\n{text}"
            );
        }
        assert!(!text.contains(r#"version="file""#), "{text}");
        assert_eq!(text.matches("# TYPE nv_inference_count counter").count(), 1);
        m.serve("1");
        m.succeeded("m@1", Duration::from_micros(10));
        let mut text = String::new();
        m.render(&mut text);
        assert!(text.contains("nv_inference_request_success{model=\"m\",version=\"1\"} 3\n"));
    }
}

//! The dynamic batcher in front of a model.
//!
//! Requests wait in one bounded queue; a few worker threads each take *whatever is waiting*
//! (up to `max_batch`) as their next batch and run the model on it, so an idle server adds no
//! delay and a busy one amortises the forward pass over many requests.
//!
//! Admission is deadline-aware and the queue is bounded by count and by time: a request joins
//! only if the queue has room, its expected wait is within `max_queue_wait`, and its expected
//! completion (the wait plus one forward pass, from the measured costs) falls before its
//! deadline; otherwise it is refused at once (the caller turns that into RESOURCE_EXHAUSTED, or
//! the edge sends it to the cloud) instead of waiting to be late. Requests whose time ran out
//! while queued, and those whose caller has gone (client cancelled), are dropped before
//! compute. Model work runs on these dedicated threads, never on the async runtime's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;

use std::time::{Duration, Instant};
use thread_priority::{ThreadPriority, ThreadPriorityValue, set_current_thread_priority};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use edgeinfer_model::ood::Novelty;
use edgeinfer_model::{Classifier, ModelError, ModelMetadata};
use tokio::sync::oneshot;

use crate::metrics::BatcherMetrics;

/// How the batcher forms batches.
#[derive(Clone, Copy, Debug)]
pub struct BatcherConfig {
    /// Most requests in one forward pass.
    pub max_batch: usize,
    /// Most requests waiting; more are refused at once.
    pub max_queue: usize,
    /// Longest a request may wait for the model: one expected to wait longer is refused at
    /// once, and one that has waited longer is dropped before compute.
    pub max_queue_wait: Duration,
    /// How long a worker holding a partial batch waits for more requests. Zero (the default)
    /// means it never waits: it runs what is there.
    pub max_queue_delay: Duration,
    /// Worker threads, each running one forward pass at a time on one core.
    pub workers: usize,
    /// A model whose forward pass of one request is measured below this runs it on the
    /// caller's thread when nothing is queued, skipping the hand-off to a worker and back
    /// (two thread wake-ups, which cost more than such a pass). Zero: always hand off.
    pub inline_below: Duration,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            max_batch: DEFAULT_MAX_BATCH,
            max_queue: DEFAULT_MAX_QUEUE,
            max_queue_wait: DEFAULT_MAX_QUEUE_WAIT,
            max_queue_delay: Duration::ZERO,
            workers: thread::available_parallelism().map_or(1, |n| n.get()),
            inline_below: DEFAULT_INLINE_BELOW,
        }
    }
}

/// Default of [`BatcherConfig::max_batch`].
pub const DEFAULT_MAX_BATCH: usize = 64;

/// Default of [`BatcherConfig::max_queue`].
pub const DEFAULT_MAX_QUEUE: usize = 1024;

/// Default of [`BatcherConfig::inline_below`]: the edge MLP's passes (2 to 18 µs at batch 1,
/// int8 to q4_0, `cargo bench --bench model_forward`) run inline, the cloud CNN's (154 µs) on
/// the workers.
pub const DEFAULT_INLINE_BELOW: Duration = Duration::from_micros(25);

/// Default of [`BatcherConfig::max_queue_wait`]: five times the edge's default budget: a
/// bound for requests that set no deadline (at the cloud, calls without a gRPC deadline), far
/// above what any budgeted request can wait.
pub const DEFAULT_MAX_QUEUE_WAIT: Duration = Duration::from_millis(500);

impl BatcherConfig {
    /// The settings as both nodes' flags give them; `workers: None` means one per core.
    pub fn from_flags(
        max_batch: u32,
        max_queue: u32,
        max_queue_wait_ms: u64,
        queue_delay_us: u64,
        workers: Option<u32>,
        inline_below_us: u64,
    ) -> Self {
        Self {
            max_batch: max_batch as usize,
            max_queue: max_queue as usize,
            max_queue_wait: Duration::from_millis(max_queue_wait_ms),
            max_queue_delay: Duration::from_micros(queue_delay_us),
            workers: workers.map_or(Self::default().workers, |w| w as usize),
            inline_below: Duration::from_micros(inline_below_us),
        }
    }
}

/// Why the batcher could not score a request.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The queue is full.
    #[error("the model's queue is full ({0} requests waiting, --max-queue); retry later")]
    QueueFull(usize),
    /// The request would wait longer than the queue's time bound.
    #[error(
        "the model's queue is {} ms long, over its {} ms bound (--max-queue-wait-ms); retry later",
        .expected.as_millis(), .limit.as_millis()
    )]
    QueueTooLong {
        /// The wait expected for this request.
        expected: Duration,
        /// The bound.
        limit: Duration,
    },
    /// The request's answer is expected after its deadline: refused before it takes a place.
    #[error(
        "the model is expected to answer in {} µs, after the request's deadline ({} µs left); \
         retry later or allow a larger budget",
        .expected.as_micros(), .left.as_micros()
    )]
    WouldMiss {
        /// Expected time to the answer: the queue ahead plus one forward pass.
        expected: Duration,
        /// Time left until the request's deadline.
        left: Duration,
    },
    /// The request's time ran out while it waited; it was not computed.
    #[error("the request's time ran out after {} µs in the model's queue; not computed", .0.as_micros())]
    Expired(Duration),
    /// The batcher has shut down.
    #[error("the model is shutting down")]
    Stopped,
    /// The model failed on the batch.
    #[error("the model failed: {0}")]
    Model(String),
    /// The request's input, outside [0, 1], drives the model's outputs to infinity or NaN: a
    /// client's mistake (the values are too large for the network), not the model's.
    #[error(
        "input: the model's outputs overflow on these values (they leave [0, 1] by too much); scale the input"
    )]
    Overflow,
}

/// The result for one request.
#[derive(Clone, Debug)]
pub struct Scored {
    /// Probabilities of every label.
    pub probabilities: Vec<f32>,
    /// Time spent waiting in the queue.
    pub queue: Duration,
    /// Time of the forward pass of the batch this request was in.
    pub compute: Duration,
    /// Size of that batch.
    pub batch_size: usize,
    /// How unlike the model's training inputs this input is, when the model has a detector.
    pub novelty: Option<Novelty>,
}

impl BatchError {
    /// True for the refusals of a busy model (full queue, too long a wait, a deadline it would
    /// miss or missed): the request may go elsewhere or be retried; nothing is wrong with it.
    pub fn is_overload(&self) -> bool {
        matches!(
            self,
            Self::QueueFull(_)
                | Self::QueueTooLong { .. }
                | Self::WouldMiss { .. }
                | Self::Expired(_)
        )
    }
}

struct Job {
    input: Vec<f32>,
    enqueued: Instant,
    /// Not computed from this instant on: the request's deadline or the queue's time bound.
    expires: Instant,
    reply: oneshot::Sender<Result<Scored, BatchError>>,
}

/// Live timing the router uses to predict how long a new request would take.
#[derive(Debug, Default)]
struct Estimates {
    /// Smoothed forward-pass time per batch, in nanoseconds.
    batch_ns: AtomicU64,
    /// Smoothed forward-pass time per request in a batch, in nanoseconds.
    item_ns: AtomicU64,
    /// Smoothed forward-pass time of a batch of one, in nanoseconds.
    single_ns: AtomicU64,
    /// Requests queued or being computed.
    in_flight: AtomicUsize,
}

const EWMA_WEIGHT: f64 = 0.125;

/// Folds `sample` into the smoothed value in `cell`. A sample counts at most twice the current
/// value: a pass that was descheduled for a few milliseconds must not make the model look
/// slow (the next requests would be refused, or handed off, for nothing), while a lasting
/// change still moves the estimate by up to an eighth per sample.
fn ewma(cell: &AtomicU64, sample: u64) {
    let old = cell.load(Ordering::Relaxed);
    let new = if old == 0 {
        sample
    } else {
        let sample = sample.min(old.saturating_mul(2));
        (old as f64 + EWMA_WEIGHT * (sample as f64 - old as f64)) as u64
    };
    cell.store(new, Ordering::Relaxed);
}

/// A model behind a bounded queue and worker threads. Cheap to clone; the workers stop when the
/// last clone is dropped, after finishing what was queued.
#[derive(Clone)]
pub struct Batcher {
    tx: Sender<Job>,
    model: Arc<dyn Classifier>,
    estimates: Arc<Estimates>,
    config: BatcherConfig,
    metrics: BatcherMetrics,
}

/// Priority of the model worker threads: niceness 5 on Linux (this crate maps 0..=99 onto
/// niceness 19..=-20; 35 gives 5), a little below the default elsewhere.
fn worker_priority() -> ThreadPriority {
    ThreadPriorityValue::try_from(35u8).map_or(ThreadPriority::Min, ThreadPriority::Crossplatform)
}

impl Batcher {
    /// Starts the worker threads for `model`.
    pub fn new(model: Arc<dyn Classifier>, config: BatcherConfig, metrics: BatcherMetrics) -> Self {
        let config = BatcherConfig {
            max_batch: config.max_batch.max(1),
            max_queue: config.max_queue.max(1),
            workers: config.workers.max(1),
            ..config
        };
        let (tx, rx) = crossbeam_channel::bounded(config.max_queue);
        let estimates = Arc::new(Estimates::default());
        for i in 0..config.workers {
            let worker = Worker {
                rx: rx.clone(),
                model: model.clone(),
                estimates: estimates.clone(),
                config,
                metrics: metrics.clone(),
            };
            thread::Builder::new()
                .name(format!("model-{}-{i}", model.metadata().name))
                .spawn(move || {
                    // Model workers yield the CPU to the async runtime's threads, which keep
                    // the deadlines: a timer that fires late (a cloud call's timeout, then the
                    // fallback answer) breaks a request's budget. Slightly lower, not lowest: at
                    // niceness 19 another busy process on the machine starves the model.
                    if let Err(e) = set_current_thread_priority(worker_priority()) {
                        tracing::debug!(error = ?e, "model worker keeps the default priority");
                    }
                    worker.run()
                })
                .expect("spawning a model worker thread");
        }
        Self {
            tx,
            model,
            estimates,
            config,
            metrics,
        }
    }

    /// The model's metadata.
    pub fn metadata(&self) -> &ModelMetadata {
        self.model.metadata()
    }

    /// The model behind the queue.
    pub fn model(&self) -> &Arc<dyn Classifier> {
        &self.model
    }

    /// Scores one input (`metadata().input_len()` values), to be answered before `deadline`
    /// if one is given: refused at once when the queue is full, when the expected wait is over
    /// the queue's time bound, or when the answer is expected after the deadline.
    pub async fn classify(
        &self,
        input: Vec<f32>,
        deadline: Option<Instant>,
    ) -> Result<Scored, BatchError> {
        let now = Instant::now();
        let (wait, completion) = self.expected();
        let limit = self.config.max_queue_wait;
        let refusal = if wait > limit {
            Some(BatchError::QueueTooLong {
                expected: wait,
                limit,
            })
        } else {
            deadline
                .filter(|&d| now + completion > d)
                .map(|d| BatchError::WouldMiss {
                    expected: completion,
                    left: d.saturating_duration_since(now),
                })
        };
        if let Some(refusal) = refusal {
            self.metrics.rejected.inc();
            return Err(refusal);
        }
        if self.runs_inline() {
            return self.score_inline(&input);
        }
        let bound = now + limit;
        let (reply, rx) = oneshot::channel();
        let job = Job {
            input,
            enqueued: now,
            expires: deadline.map_or(bound, |d| d.min(bound)),
            reply,
        };
        self.estimates.in_flight.fetch_add(1, Ordering::Relaxed);
        match self.tx.try_send(job) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.estimates.in_flight.fetch_sub(1, Ordering::Relaxed);
                self.metrics.rejected.inc();
                return Err(BatchError::QueueFull(self.tx.len()));
            }
            Err(TrySendError::Disconnected(_)) => {
                self.estimates.in_flight.fetch_sub(1, Ordering::Relaxed);
                return Err(BatchError::Stopped);
            }
        }
        self.metrics.queue_depth.set(self.tx.len() as i64);
        rx.await.unwrap_or(Err(BatchError::Stopped))
    }

    /// True when a request arriving now should be scored on the caller's thread: the model's
    /// pass of one request is measured and cheaper than a hand-off, and nothing is queued
    /// (queued requests go first, and are batched).
    fn runs_inline(&self) -> bool {
        let single = self.estimates.single_ns.load(Ordering::Relaxed);
        single > 0
            && u128::from(single) < self.config.inline_below.as_nanos()
            && self.in_flight() == 0
    }

    /// Scores one request on this thread, recorded as a batch of one with no queueing.
    fn score_inline(&self, input: &[f32]) -> Result<Scored, BatchError> {
        let started = Instant::now();
        let result = score_one(&*self.model, input);
        let novelty = assess(&*self.model, input);
        let compute = started.elapsed();
        record_pass(&self.metrics, &self.estimates, 1, compute);
        record_queued(&self.metrics, Duration::ZERO);
        result.map(|probabilities| Scored {
            probabilities,
            queue: Duration::ZERO,
            compute,
            batch_size: 1,
            novelty,
        })
    }

    /// Requests queued or being computed right now.
    pub fn in_flight(&self) -> usize {
        self.estimates.in_flight.load(Ordering::Relaxed)
    }

    /// Smoothed forward-pass time of one batch.
    pub fn batch_compute(&self) -> Duration {
        Duration::from_nanos(self.estimates.batch_ns.load(Ordering::Relaxed))
    }

    /// Expected time from now until a request submitted now has its answer: the work already
    /// in flight spread over the workers, plus one forward pass. Zero until the first batch
    /// has been measured.
    pub fn expected_completion(&self) -> Duration {
        self.expected().1
    }

    /// The expected wait of a request submitted now (the work in flight spread over the
    /// workers) and its expected completion (the wait plus one forward pass).
    fn expected(&self) -> (Duration, Duration) {
        let item = self.estimates.item_ns.load(Ordering::Relaxed) as f64;
        let batch = self.estimates.batch_ns.load(Ordering::Relaxed) as f64;
        let ahead = self.in_flight() as f64;
        let wait = ahead * item / self.config.workers as f64;
        (
            Duration::from_nanos(wait as u64),
            Duration::from_nanos((wait + batch) as u64),
        )
    }
}

/// Records a forward pass of `n` requests that took `compute`, on a worker or inline: the
/// metrics, and the estimates admission and the inline decision read.
fn record_pass(metrics: &BatcherMetrics, estimates: &Estimates, n: usize, compute: Duration) {
    metrics.batch_size.observe(n as f64);
    metrics.compute_seconds.observe(compute.as_secs_f64());
    metrics.version.executed(n, compute);
    let nanos = compute.as_nanos() as u64;
    ewma(&estimates.batch_ns, nanos);
    ewma(&estimates.item_ns, nanos / n as u64);
    if n == 1 {
        ewma(&estimates.single_ns, nanos);
    }
}

/// Records the time one request waited for its pass.
fn record_queued(metrics: &BatcherMetrics, queue: Duration) {
    metrics.queue_seconds.observe(queue.as_secs_f64());
    metrics.version.queued(queue);
}

/// One request's forward pass on its own (inline, or after its batch gave non-finite outputs):
/// non-finite outputs are the input's fault when it leaves [0, 1], the model's when it does not.
fn score_one(model: &dyn Classifier, input: &[f32]) -> Result<Vec<f32>, BatchError> {
    let classes = model.metadata().labels.len();
    match model.classify(input, 1) {
        Ok(probabilities) if probabilities.len() == classes => Ok(probabilities),
        Ok(probabilities) => Err(BatchError::Model(format!(
            "returned {} probabilities for one input with {classes} labels",
            probabilities.len()
        ))),
        Err(ModelError::NonFiniteOutput(_)) if input.iter().any(|v| !(0.0..=1.0).contains(v)) => {
            Err(BatchError::Overflow)
        }
        Err(e) => Err(BatchError::Model(e.to_string())),
    }
}

/// The model's verdict on how unlike its training inputs `input` is, when it has a detector;
/// part of the model's work, so timed with its pass.
fn assess(model: &dyn Classifier, input: &[f32]) -> Option<Novelty> {
    model.ood().map(|d| d.assess(input))
}

struct Worker {
    rx: Receiver<Job>,
    model: Arc<dyn Classifier>,
    estimates: Arc<Estimates>,
    config: BatcherConfig,
    metrics: BatcherMetrics,
}

impl Worker {
    fn run(self) {
        let mut batch: Vec<Job> = Vec::with_capacity(self.config.max_batch);
        while let Ok(first) = self.rx.recv() {
            batch.push(first);
            self.fill(&mut batch);
            self.metrics.queue_depth.set(self.rx.len() as i64);
            self.compute(&mut batch);
        }
    }

    /// Takes what is waiting, up to `max_batch`; with a queue delay, waits that long at most
    /// for the batch to fill.
    fn fill(&self, batch: &mut Vec<Job>) {
        let deadline = Instant::now() + self.config.max_queue_delay;
        while batch.len() < self.config.max_batch {
            match self.rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) if self.config.max_queue_delay.is_zero() => break,
                Err(_) => match self.rx.recv_deadline(deadline) {
                    Ok(job) => batch.push(job),
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                },
            }
        }
    }

    fn compute(&self, batch: &mut Vec<Job>) {
        // Callers that gave up (cancellation) and requests whose time ran out in the queue are
        // not computed for.
        let now = Instant::now();
        let (mut cancelled, mut expired) = (0u64, 0u64);
        for job in std::mem::take(batch) {
            if job.reply.is_closed() {
                cancelled += 1;
                self.estimates.in_flight.fetch_sub(1, Ordering::Relaxed);
            } else if job.expires <= now {
                expired += 1;
                // Out of the count before the caller hears, as for an answer.
                self.estimates.in_flight.fetch_sub(1, Ordering::Relaxed);
                let waited = now.saturating_duration_since(job.enqueued);
                let _ = job.reply.send(Err(BatchError::Expired(waited)));
            } else {
                batch.push(job);
            }
        }
        self.metrics.cancelled.inc_by(cancelled);
        self.metrics.expired.inc_by(expired);
        if batch.is_empty() {
            return;
        }
        let n = batch.len();
        let input_len = self.model.metadata().input_len();
        let mut inputs = Vec::with_capacity(n * input_len);
        for job in batch.iter() {
            inputs.extend_from_slice(&job.input);
        }
        let started = Instant::now();
        let result = self.model.classify(&inputs, n);
        let novelties: Vec<Option<Novelty>> = batch
            .iter()
            .map(|job| assess(&*self.model, &job.input))
            .collect();
        let compute = started.elapsed();
        record_pass(&self.metrics, &self.estimates, n, compute);
        let classes = self.model.metadata().labels.len();
        let rows: Vec<Result<Vec<f32>, BatchError>> = match result {
            Ok(probs) if probs.len() == n * classes => {
                probs.chunks(classes).map(|c| Ok(c.to_vec())).collect()
            }
            Ok(probs) => {
                let e = format!(
                    "returned {} probabilities for a batch of {n} with {classes} labels",
                    probs.len()
                );
                (0..n).map(|_| Err(BatchError::Model(e.clone()))).collect()
            }
            // Non-finite outputs: score each request alone, so that one request whose huge
            // values overflow the network fails alone instead of failing its whole batch.
            Err(ModelError::NonFiniteOutput(_)) => batch
                .iter()
                .map(|job| score_one(&*self.model, &job.input))
                .collect(),
            Err(e) => (0..n)
                .map(|_| Err(BatchError::Model(e.to_string())))
                .collect(),
        };
        for ((job, row), novelty) in batch.drain(..).zip(rows).zip(novelties) {
            let queue = started.saturating_duration_since(job.enqueued);
            record_queued(&self.metrics, queue);
            let answer = row.map(|probabilities| Scored {
                probabilities,
                queue,
                compute,
                batch_size: n,
                novelty,
            });
            self.estimates.in_flight.fetch_sub(1, Ordering::Relaxed);
            // The caller may have gone in the meantime; nothing to do then.
            let _ = job.reply.send(answer);
        }
    }
}

#[cfg(test)]
// The tests hold the model's gate (a std mutex the worker *thread* blocks on) across awaits on
// purpose: that is how they keep a batch in the model while requests pile up.
#[allow(clippy::await_holding_lock)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use edgeinfer_model::ModelError;
    use std::sync::Mutex;

    /// A model that records batch sizes and can be held still, to observe queueing.
    struct Recorder {
        meta: ModelMetadata,
        batches: Mutex<Vec<usize>>,
        gate: Mutex<()>,
        /// Forward passes started (the worker is inside the model, maybe waiting on the gate).
        entered: AtomicUsize,
        /// The thread of the last forward pass.
        thread: Mutex<String>,
        /// An input detector, for the tests of novelty.
        ood: Option<edgeinfer_model::ood::Detector>,
    }

    impl Recorder {
        fn last_thread(&self) -> String {
            self.thread.lock().unwrap().clone()
        }
    }

    impl Classifier for Recorder {
        fn metadata(&self) -> &ModelMetadata {
            &self.meta
        }
        fn classify(&self, inputs: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
            self.entered.fetch_add(1, Ordering::SeqCst);
            *self.thread.lock().unwrap() = thread::current().name().unwrap_or("").to_string();
            let _held = self.gate.lock().unwrap();
            self.batches.lock().unwrap().push(batch);
            // As a real network: huge inputs overflow it; 0.75 as a second value stands for
            // broken weights (NaN from an ordinary input).
            if let Some(i) =
                (0..batch).find(|&i| inputs[i * 2 + 1] > 1e30 || inputs[i * 2 + 1] == 0.75)
            {
                return Err(ModelError::NonFiniteOutput(format!("row {i} of {batch}")));
            }
            // Probability of label 1 is the first input value: lets tests match rows.
            Ok((0..batch)
                .flat_map(|i| {
                    let v = inputs[i * 2];
                    [1.0 - v, v]
                })
                .collect())
        }
        fn ood(&self) -> Option<&edgeinfer_model::ood::Detector> {
            self.ood.as_ref()
        }
    }

    fn recorder() -> Arc<Recorder> {
        Arc::new(Recorder {
            meta: ModelMetadata {
                name: "rec".into(),
                version: "1".into(),
                task: "test".into(),
                architecture: "none".into(),
                input_shape: vec![2],
                labels: vec!["a".into(), "b".into()],
                temperature: 1.0,
                test_accuracy: 0.0,
                quantization: "f32".into(),
            },
            batches: Mutex::default(),
            gate: Mutex::default(),
            entered: AtomicUsize::new(0),
            thread: Mutex::default(),
            ood: None,
        })
    }

    fn batcher(model: Arc<Recorder>, max_batch: usize, max_queue: usize) -> Batcher {
        let metrics = Metrics::unregistered(model.metadata());
        Batcher::new(
            model,
            BatcherConfig {
                max_batch,
                max_queue,
                max_queue_delay: Duration::ZERO,
                workers: 1,
                // The tests watch requests queue behind a held model: never inline, but in
                // the test of the inline path.
                inline_below: Duration::ZERO,
                ..BatcherConfig::default()
            },
            metrics.batcher.clone(),
        )
    }

    #[test]
    fn one_slow_sample_does_not_make_the_model_look_slow() {
        let cell = AtomicU64::new(0);
        ewma(&cell, 2_000);
        assert_eq!(
            cell.load(Ordering::Relaxed),
            2_000,
            "the first sample is taken as it is"
        );
        ewma(&cell, 5_000_000); // descheduled for 5 ms
        assert_eq!(
            cell.load(Ordering::Relaxed),
            2_250,
            "counted as twice the estimate"
        );
        for _ in 0..40 {
            ewma(&cell, 100_000);
        }
        assert!(
            cell.load(Ordering::Relaxed) > 90_000,
            "a lasting change is followed"
        );
    }

    #[tokio::test]
    async fn a_cheap_pass_runs_on_the_callers_thread_when_nothing_waits() {
        let model = recorder();
        let metrics = Metrics::unregistered(model.metadata());
        let config = BatcherConfig {
            workers: 1,
            inline_below: Duration::from_secs(1),
            ..BatcherConfig::default()
        };
        let b = Batcher::new(model.clone(), config, metrics.batcher.clone());
        // The first pass is measured on a worker; from then on it is known to be cheap.
        b.classify(vec![0.25, 0.0], None).await.unwrap();
        assert_eq!(model.last_thread(), "model-rec-0");
        let s = b.classify(vec![0.5, 0.0], None).await.unwrap();
        assert_eq!(s.probabilities, vec![0.5, 0.5]);
        assert_eq!((s.batch_size, s.queue), (1, Duration::ZERO));
        assert_ne!(model.last_thread(), "model-rec-0", "scored inline");
        assert_eq!(b.in_flight(), 0);
    }

    /// A model with an input detector: every answer, batched or inline, carries its verdict.
    #[tokio::test]
    async fn answers_carry_the_detectors_verdict_on_both_paths() {
        // Training inputs along the diagonal: (t, t) with a little spread across it.
        let train: Vec<f32> = (0..400)
            .flat_map(|i| {
                let t = (i % 100) as f32 / 100.0;
                let off = if i % 2 == 0 { 0.01 } else { -0.01 };
                [t + off, t - off]
            })
            .collect();
        let detector =
            edgeinfer_model::ood::Detector::fit(&train, 2, &train[..200], 1, 0.99).unwrap();
        let mut model = Arc::into_inner(recorder()).unwrap();
        model.ood = Some(detector);
        let model = Arc::new(model);
        let metrics = Metrics::unregistered(model.metadata());
        let config = BatcherConfig {
            workers: 1,
            inline_below: Duration::from_secs(1),
            ..BatcherConfig::default()
        };
        let b = Batcher::new(model.clone(), config, metrics.batcher.clone());
        let on_worker = b.classify(vec![0.4, 0.4], None).await.unwrap();
        assert_eq!(model.last_thread(), "model-rec-0");
        let inline = b.classify(vec![0.9, 0.1], None).await.unwrap();
        assert_ne!(model.last_thread(), "model-rec-0");
        let (usual, unusual) = (on_worker.novelty.unwrap(), inline.novelty.unwrap());
        assert!(!usual.unusual && usual.score < 2.0, "{usual:?}");
        assert!(unusual.unusual && unusual.score > 100.0, "{unusual:?}");
        // Without a detector there is no verdict.
        let plain = batcher(recorder(), 4, 4);
        assert_eq!(
            plain.classify(vec![0.4, 0.4], None).await.unwrap().novelty,
            None
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_expected_late_or_too_long_in_the_queue_is_refused_at_once() {
        let model = recorder();
        let b = batcher(model.clone(), 8, 16);
        // Measured costs: 40 ms a pass, of one request.
        b.estimates.batch_ns.store(40_000_000, Ordering::Relaxed);
        b.estimates.item_ns.store(40_000_000, Ordering::Relaxed);
        let soon = Some(Instant::now() + Duration::from_millis(20));
        let e = b.classify(vec![0.0, 0.0], soon).await.unwrap_err();
        assert!(matches!(e, BatchError::WouldMiss { .. }), "{e}");
        assert!(e.is_overload());
        let later = Some(Instant::now() + Duration::from_millis(400));
        b.classify(vec![0.0, 0.0], later).await.unwrap();
        // Twenty requests ahead at 40 ms each: 800 ms of waiting, over the 500 ms bound.
        b.estimates.in_flight.fetch_add(20, Ordering::Relaxed);
        let e = b.classify(vec![0.0, 0.0], None).await.unwrap_err();
        assert!(matches!(e, BatchError::QueueTooLong { .. }), "{e}");
        assert!(e.to_string().contains("--max-queue-wait-ms"), "{e}");
        b.estimates.in_flight.fetch_sub(20, Ordering::Relaxed);
        assert_eq!(
            *model.batches.lock().unwrap(),
            vec![1],
            "refused ones never ran"
        );
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_whose_time_runs_out_in_the_queue_is_not_computed() {
        let model = recorder();
        let b = batcher(model.clone(), 8, 16);
        let (held, first) = hold_worker(&model, &b).await;
        let deadline = Some(Instant::now() + Duration::from_millis(30));
        let queued = tokio::spawn({
            let b = b.clone();
            async move { b.classify(vec![0.5, 0.0], deadline).await }
        });
        while b.tx.is_empty() {
            tokio::task::yield_now().await;
        }
        std::thread::sleep(Duration::from_millis(40));
        drop(held);
        first.await.unwrap().unwrap();
        let e = queued.await.unwrap().unwrap_err();
        assert!(matches!(e, BatchError::Expired(_)), "{e}");
        assert_eq!(
            *model.batches.lock().unwrap(),
            vec![1],
            "the expired one never ran"
        );
        assert_eq!(b.in_flight(), 0);
    }

    #[tokio::test]
    async fn single_request_runs_alone_and_rows_come_back_to_their_callers() {
        let model = recorder();
        let b = batcher(model.clone(), 8, 16);
        let s = b.classify(vec![0.25, 0.0], None).await.unwrap();
        assert_eq!(s.probabilities, vec![0.75, 0.25]);
        assert_eq!(s.batch_size, 1);
        assert_eq!(*model.batches.lock().unwrap(), vec![1]);
    }

    /// Holds the worker inside the model with one request: the model's gate, and that
    /// request's task.
    async fn hold_worker<'m>(
        model: &'m Recorder,
        b: &Batcher,
    ) -> (
        std::sync::MutexGuard<'m, ()>,
        tokio::task::JoinHandle<Result<Scored, BatchError>>,
    ) {
        let held = model.gate.lock().unwrap();
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.classify(vec![0.0, 0.0], None).await }
        });
        while model.entered.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        (held, first)
    }

    /// Holds the worker inside the model with one request, queues `inputs` behind it, then
    /// lets the model go: the queued requests form one batch. Their answers, in order.
    async fn behind_one(
        model: &Recorder,
        b: &Batcher,
        inputs: Vec<Vec<f32>>,
    ) -> Vec<Result<Scored, BatchError>> {
        let (held, first) = hold_worker(model, b).await;
        let n = inputs.len();
        let rest: Vec<_> = inputs
            .into_iter()
            .map(|input| {
                let b = b.clone();
                tokio::spawn(async move { b.classify(input, None).await })
            })
            .collect();
        while b.tx.len() < n {
            tokio::task::yield_now().await;
        }
        drop(held);
        first.await.unwrap().unwrap();
        let mut answers = Vec::with_capacity(n);
        for r in rest {
            answers.push(r.await.unwrap());
        }
        answers
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn waiting_requests_are_batched_together() {
        let model = recorder();
        let b = batcher(model.clone(), 8, 64);
        let inputs = (1..=5).map(|i| vec![i as f32 / 10.0, 0.0]).collect();
        for (i, r) in behind_one(&model, &b, inputs).await.into_iter().enumerate() {
            let s = r.unwrap();
            assert!((s.probabilities[1] - (i + 1) as f32 / 10.0).abs() < 1e-6);
            assert_eq!(s.batch_size, 5);
        }
        assert_eq!(*model.batches.lock().unwrap(), vec![1, 5]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_input_that_overflows_the_model_fails_alone_not_its_batch() {
        let model = recorder();
        let b = batcher(model.clone(), 8, 64);
        let inputs = vec![vec![0.1, 0.0], vec![0.2, 1e31], vec![0.3, 0.0]];
        let answers = behind_one(&model, &b, inputs).await;
        assert!((answers[0].as_ref().unwrap().probabilities[1] - 0.1).abs() < 1e-6);
        assert!(
            matches!(answers[1], Err(BatchError::Overflow)),
            "{:?}",
            answers[1]
        );
        assert!((answers[2].as_ref().unwrap().probabilities[1] - 0.3).abs() < 1e-6);
        // The batch of three, then each of its requests alone.
        assert_eq!(*model.batches.lock().unwrap(), vec![1, 3, 1, 1, 1]);
        // Non-finite outputs from an input in [0, 1] are the model's fault.
        let e = b.classify(vec![0.5, 0.75], None).await.unwrap_err();
        assert!(matches!(e, BatchError::Model(_)), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_full_queue_refuses_at_once() {
        let model = recorder();
        let b = batcher(model.clone(), 1, 2);
        let held = model.gate.lock().unwrap();
        // One request in the worker, two in the queue: the queue is then full.
        let spawn = || {
            let b = b.clone();
            tokio::spawn(async move { b.classify(vec![0.0, 0.0], None).await })
        };
        let mut pending = vec![spawn()];
        while model.entered.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        pending.push(spawn());
        pending.push(spawn());
        while b.tx.len() < 2 {
            tokio::task::yield_now().await;
        }
        let err = b.classify(vec![0.0, 0.0], None).await.unwrap_err();
        assert!(matches!(err, BatchError::QueueFull(2)), "{err}");
        drop(held);
        for p in pending {
            p.await.unwrap().unwrap();
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn cancelled_requests_are_not_computed() {
        let model = recorder();
        let b = batcher(model.clone(), 8, 16);
        let (held, first) = hold_worker(&model, &b).await;
        let abandoned = tokio::spawn({
            let b = b.clone();
            async move { b.classify(vec![0.5, 0.0], None).await }
        });
        while b.tx.is_empty() {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        drop(held);
        first.await.unwrap().unwrap();
        let s = b.classify(vec![0.0, 0.0], None).await.unwrap();
        assert_eq!(s.batch_size, 1);
        assert_eq!(*model.batches.lock().unwrap(), vec![1, 1]);
        assert_eq!(b.in_flight(), 0);
    }
}

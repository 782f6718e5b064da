//! The dynamic batcher in front of a model.
//!
//! Requests wait in one bounded queue; a few worker threads each take *whatever is waiting*
//! (up to `max_batch`) as their next batch and run the model on it, so an idle server adds no
//! delay and a busy one amortises the forward pass over many requests. The queue is bounded:
//! when it is full a request is refused at once (the caller turns that into
//! RESOURCE_EXHAUSTED) instead of waiting without bound. Requests whose caller has gone away
//! (deadline passed, client cancelled) are dropped before compute. Model work runs on these
//! dedicated threads, never on the async runtime's.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::thread;

use std::time::{Duration, Instant};
use thread_priority::{ThreadPriority, ThreadPriorityValue, set_current_thread_priority};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
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
    /// How long a worker holding a partial batch waits for more requests. Zero (the default)
    /// means it never waits: it runs what is there.
    pub max_queue_delay: Duration,
    /// Worker threads, each running one forward pass at a time on one core.
    pub workers: usize,
}

impl Default for BatcherConfig {
    fn default() -> Self {
        Self {
            max_batch: 64,
            max_queue: 1024,
            max_queue_delay: Duration::ZERO,
            workers: thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

impl BatcherConfig {
    /// The settings as both nodes' flags give them; `workers: None` means one per core.
    pub fn from_flags(
        max_batch: u32,
        max_queue: u32,
        queue_delay_us: u64,
        workers: Option<u32>,
    ) -> Self {
        Self {
            max_batch: max_batch as usize,
            max_queue: max_queue as usize,
            max_queue_delay: Duration::from_micros(queue_delay_us),
            workers: workers.map_or(Self::default().workers, |w| w as usize),
        }
    }
}

/// Why the batcher could not score a request.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    /// The queue is full.
    #[error("the model's queue is full ({0} requests waiting); retry later")]
    QueueFull(usize),
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
}

struct Job {
    input: Vec<f32>,
    enqueued: Instant,
    reply: oneshot::Sender<Result<Scored, BatchError>>,
}

/// Live timing the router uses to predict how long a new request would take.
#[derive(Debug, Default)]
struct Estimates {
    /// Smoothed forward-pass time per batch, in nanoseconds.
    batch_ns: AtomicU64,
    /// Smoothed forward-pass time per request in a batch, in nanoseconds.
    item_ns: AtomicU64,
    /// Requests queued or being computed.
    in_flight: AtomicUsize,
}

const EWMA_WEIGHT: f64 = 0.125;

fn ewma(cell: &AtomicU64, sample: u64) {
    let old = cell.load(Ordering::Relaxed);
    let new = if old == 0 {
        sample
    } else {
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

    /// Scores one input (`metadata().input_len()` values in [0, 1]).
    pub async fn classify(&self, input: Vec<f32>) -> Result<Scored, BatchError> {
        let (reply, rx) = oneshot::channel();
        let job = Job {
            input,
            enqueued: Instant::now(),
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
        let item = self.estimates.item_ns.load(Ordering::Relaxed) as f64;
        let batch = self.estimates.batch_ns.load(Ordering::Relaxed) as f64;
        let ahead = self.in_flight() as f64;
        let wait = ahead * item / self.config.workers as f64;
        Duration::from_nanos((wait + batch) as u64)
    }
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

    /// One request's forward pass on its own, after its batch gave non-finite outputs: the
    /// input's fault when it leaves [0, 1], the model's when it does not.
    fn score_alone(&self, input: &[f32]) -> Result<Vec<f32>, BatchError> {
        match self.model.classify(input, 1) {
            Ok(probabilities) => Ok(probabilities),
            Err(ModelError::NonFiniteOutput(_))
                if input.iter().any(|v| !(0.0..=1.0).contains(v)) =>
            {
                Err(BatchError::Overflow)
            }
            Err(e) => Err(BatchError::Model(e.to_string())),
        }
    }

    fn compute(&self, batch: &mut Vec<Job>) {
        // Callers that gave up (deadline, cancellation) are not computed for.
        let before = batch.len();
        batch.retain(|job| !job.reply.is_closed());
        let dropped = before - batch.len();
        if dropped > 0 {
            self.estimates
                .in_flight
                .fetch_sub(dropped, Ordering::Relaxed);
            self.metrics.cancelled.inc_by(dropped as u64);
        }
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
        let compute = started.elapsed();
        self.metrics.batch_size.observe(n as f64);
        self.metrics.compute_seconds.observe(compute.as_secs_f64());
        self.metrics.triton.executed(n, compute);
        let nanos = compute.as_nanos() as u64;
        ewma(&self.estimates.batch_ns, nanos);
        ewma(&self.estimates.item_ns, nanos / n as u64);
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
                .map(|job| self.score_alone(&job.input))
                .collect(),
            Err(e) => (0..n)
                .map(|_| Err(BatchError::Model(e.to_string())))
                .collect(),
        };
        for (job, row) in batch.drain(..).zip(rows) {
            let queue = started.saturating_duration_since(job.enqueued);
            self.metrics.queue_seconds.observe(queue.as_secs_f64());
            self.metrics.triton.queued(queue);
            let answer = row.map(|probabilities| Scored {
                probabilities,
                queue,
                compute,
                batch_size: n,
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
    }

    impl Classifier for Recorder {
        fn metadata(&self) -> &ModelMetadata {
            &self.meta
        }
        fn classify(&self, inputs: &[f32], batch: usize) -> Result<Vec<f32>, ModelError> {
            self.entered.fetch_add(1, Ordering::SeqCst);
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
            },
            metrics.batcher.clone(),
        )
    }

    #[tokio::test]
    async fn single_request_runs_alone_and_rows_come_back_to_their_callers() {
        let model = recorder();
        let b = batcher(model.clone(), 8, 16);
        let s = b.classify(vec![0.25, 0.0]).await.unwrap();
        assert_eq!(s.probabilities, vec![0.75, 0.25]);
        assert_eq!(s.batch_size, 1);
        assert_eq!(*model.batches.lock().unwrap(), vec![1]);
    }

    /// Holds the worker inside the model with one request, queues `inputs` behind it, then
    /// lets the model go: the queued requests form one batch. Their answers, in order.
    async fn behind_one(
        model: &Recorder,
        b: &Batcher,
        inputs: Vec<Vec<f32>>,
    ) -> Vec<Result<Scored, BatchError>> {
        let held = model.gate.lock().unwrap();
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.classify(vec![0.0, 0.0]).await }
        });
        // The worker is inside the model with the first request.
        while model.entered.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        let n = inputs.len();
        let rest: Vec<_> = inputs
            .into_iter()
            .map(|input| {
                let b = b.clone();
                tokio::spawn(async move { b.classify(input).await })
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
        let e = b.classify(vec![0.5, 0.75]).await.unwrap_err();
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
            tokio::spawn(async move { b.classify(vec![0.0, 0.0]).await })
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
        let err = b.classify(vec![0.0, 0.0]).await.unwrap_err();
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
        let held = model.gate.lock().unwrap();
        let first = tokio::spawn({
            let b = b.clone();
            async move { b.classify(vec![0.0, 0.0]).await }
        });
        while model.entered.load(Ordering::SeqCst) < 1 {
            tokio::task::yield_now().await;
        }
        let abandoned = tokio::spawn({
            let b = b.clone();
            async move { b.classify(vec![0.5, 0.0]).await }
        });
        while b.tx.is_empty() {
            tokio::task::yield_now().await;
        }
        abandoned.abort();
        let _ = abandoned.await;
        drop(held);
        first.await.unwrap().unwrap();
        let s = b.classify(vec![0.0, 0.0]).await.unwrap();
        assert_eq!(s.batch_size, 1);
        assert_eq!(*model.batches.lock().unwrap(), vec![1, 1]);
        assert_eq!(b.in_flight(), 0);
    }
}

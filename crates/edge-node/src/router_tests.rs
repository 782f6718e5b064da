//! The router on tokio's paused clock, with a fake edge model and a fake cloud: every reason,
//! placement and confidence metric, the half-open trial, the three sources of a budget, and a
//! property that every answer comes within its budget whatever the fakes' delays.

use std::sync::Mutex;
use std::sync::atomic::AtomicUsize;

use edgeinfer_model::ood::Novelty;
use edgeinfer_serving::answer::Placement;
use edgeinfer_serving::input::Decoded;

use super::*;
use crate::policy::ConfidenceMetric;

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// An edge model that answers `probabilities` after `delay`, or refuses when `full`.
struct FakeModel {
    meta: Arc<ModelMetadata>,
    probabilities: Vec<f32>,
    delay: Duration,
    completion: Duration,
    full: bool,
    /// What the model's input detector says, when it has one.
    novelty: Option<Novelty>,
    calls: AtomicUsize,
}

fn meta() -> ModelMetadata {
    ModelMetadata {
        name: "tiny".into(),
        version: "3".into(),
        task: "toy".into(),
        architecture: "test".into(),
        input_shape: vec![4],
        labels: vec!["a".into(), "b".into(), "c".into()],
        temperature: 1.0,
        test_accuracy: 0.9,
        quantization: "f32".into(),
    }
}

impl FakeModel {
    fn new(probabilities: [f32; 3]) -> Self {
        Self {
            meta: Arc::new(meta()),
            probabilities: probabilities.to_vec(),
            // Whole milliseconds: tokio's timer rounds sleeps up to them.
            delay: ms(1),
            completion: Duration::ZERO,
            full: false,
            novelty: None,
            calls: AtomicUsize::new(0),
        }
    }
}

impl EdgeModel for FakeModel {
    fn metadata(&self) -> Arc<ModelMetadata> {
        self.meta.clone()
    }

    async fn classify(
        &self,
        _call: &Call,
        deadline: Instant,
    ) -> Result<(Scored, Arc<ModelMetadata>), BatchError> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if self.full {
            return Err(BatchError::QueueFull(7));
        }
        // As the batcher: an answer expected after the deadline is refused at once.
        let now = Instant::now();
        if now + self.completion > deadline {
            return Err(BatchError::WouldMiss {
                expected: self.completion,
                left: deadline.saturating_duration_since(now),
            });
        }
        tokio::time::sleep(self.delay).await;
        Ok((
            Scored {
                probabilities: self.probabilities.clone(),
                queue: Duration::from_micros(10),
                compute: self.delay,
                batch_size: 1,
                novelty: self.novelty,
            },
            self.meta.clone(),
        ))
    }

    fn expected_completion(&self) -> Duration {
        self.completion
    }
}

#[derive(Clone, Copy, Debug)]
enum Outcome {
    Answer,
    Unavailable,
    Refused,
}

/// A cloud that answers (or fails) after `delay`, recording the timeouts it was given.
struct FakeCloud {
    delay: Mutex<Duration>,
    outcome: Mutex<Outcome>,
    timeouts: Mutex<Vec<Duration>>,
    /// Bytes waiting on the link, up and down.
    backlog: Mutex<[u64; 2]>,
}

impl FakeCloud {
    fn new(delay: Duration, outcome: Outcome) -> Self {
        Self {
            delay: Mutex::new(delay),
            outcome: Mutex::new(outcome),
            timeouts: Mutex::new(Vec::new()),
            backlog: Mutex::new([0, 0]),
        }
    }

    fn calls(&self) -> usize {
        self.timeouts.lock().unwrap().len()
    }
}

impl Cloud for FakeCloud {
    async fn infer(&self, call: &Call, timeout: Duration) -> Result<CloudAnswer, CallError> {
        self.timeouts.lock().unwrap().push(timeout);
        let delay = *self.delay.lock().unwrap();
        let outcome = *self.outcome.lock().unwrap();
        tokio::time::sleep(delay).await;
        match outcome {
            Outcome::Unavailable => Err(CallError::Unavailable("connection refused".into())),
            Outcome::Refused => Err(CallError::Refused("bad token".into())),
            Outcome::Answer => Ok(CloudAnswer {
                answer: Answer {
                    id: call.id.clone(),
                    label: "c".into(),
                    class_index: 2,
                    confidence: 0.97,
                    probabilities: vec![0.01, 0.02, 0.97],
                    served_by: Tier::Cloud,
                    reason: Reason::Confident,
                    degraded: false,
                    model: "big@1".into(),
                    timing: Timing {
                        cloud: ms(1),
                        ..Timing::default()
                    },
                    edge_confidence: 0.0,
                    novelty: None,
                },
                transit: Some(Transit {
                    uplink: delay / 2,
                    downlink: delay / 2,
                    uplink_bytes: 40,
                    downlink_bytes: 60,
                }),
            }),
        }
    }

    fn message_bytes(&self, _call: &Call) -> usize {
        40
    }

    fn backlog(&self) -> [u64; 2] {
        *self.backlog.lock().unwrap()
    }
}

const SURE: [f32; 3] = [0.98, 0.01, 0.01];
const UNSURE: [f32; 3] = [0.5, 0.3, 0.2];

fn policy() -> Policy {
    Policy {
        threshold: 0.9,
        default_budget: ms(100),
        metric: ConfidenceMetric::MaxProbability,
    }
}

fn router(model: FakeModel, cloud: Option<FakeCloud>) -> Router<FakeModel, FakeCloud> {
    Router::new(model, cloud, CircuitBreaker::new(3, ms(1000)), policy())
}

fn call(placement: Placement) -> Call {
    Call {
        id: "r1".into(),
        model: "toy".into(),
        input: Decoded {
            values: vec![0.0, 0.5, 1.0, 0.25],
            exact_u8: false,
        },
        budget_ms: 0,
        min_confidence: None,
        placement,
        received: Instant::now(),
        deadline: None,
    }
}

fn cloud_ok() -> Option<FakeCloud> {
    Some(FakeCloud::new(ms(10), Outcome::Answer))
}

fn cloud_of(r: &Router<FakeModel, FakeCloud>) -> &FakeCloud {
    r.cloud.as_ref().expect("a fake cloud")
}

#[tokio::test(start_paused = true)]
async fn a_confident_edge_answers_by_itself() {
    let r = router(FakeModel::new(SURE), cloud_ok());
    let a = r.route(&call(Placement::Auto)).await.unwrap();
    assert_eq!(
        (a.served_by, a.reason, a.degraded),
        (Tier::Edge, Reason::Confident, false)
    );
    assert_eq!((a.label.as_str(), a.class_index), ("a", 0));
    assert_eq!(a.model, "tiny@3");
    assert_eq!(cloud_of(&r).calls(), 0);
    assert_eq!(a.timing.edge_compute, ms(1));
}

/// A confident edge is not trusted on an input unlike its training data: the cloud answers,
/// and the answer carries the edge's verdict; with no cloud the edge answers, flagged.
#[tokio::test(start_paused = true)]
async fn an_unusual_input_goes_to_the_cloud_and_says_so() {
    let unusual = Novelty {
        score: 40.0,
        unusual: true,
    };
    let model = || FakeModel {
        novelty: Some(unusual),
        ..FakeModel::new(SURE)
    };
    let r = router(model(), cloud_ok());
    let a = r.route(&call(Placement::Auto)).await.unwrap();
    assert_eq!(
        (a.served_by, a.reason, a.degraded),
        (Tier::Cloud, Reason::OutOfDistribution, false)
    );
    assert_eq!(a.novelty, Some(unusual));
    assert_eq!(a.edge_confidence, 0.98);

    let alone = router(model(), None);
    let a = alone.route(&call(Placement::Auto)).await.unwrap();
    assert_eq!(
        (a.served_by, a.reason, a.degraded),
        (Tier::Edge, Reason::CloudUnavailable, true)
    );
    assert_eq!(a.novelty, Some(unusual));
    // A forced edge placement is obeyed; the flag goes with the answer.
    let r = router(model(), cloud_ok());
    let a = r.route(&call(Placement::EdgeOnly)).await.unwrap();
    assert_eq!((a.served_by, a.reason), (Tier::Edge, Reason::Placement));
    assert_eq!(a.novelty, Some(unusual));
    // An input like the training data is answered as before.
    let usual = FakeModel {
        novelty: Some(Novelty {
            score: 0.9,
            unusual: false,
        }),
        ..FakeModel::new(SURE)
    };
    let a = router(usual, cloud_ok())
        .route(&call(Placement::Auto))
        .await
        .unwrap();
    assert_eq!((a.served_by, a.reason), (Tier::Edge, Reason::Confident));
}

#[tokio::test(start_paused = true)]
async fn an_unsure_edge_asks_the_cloud_with_the_time_left_less_the_reserve() {
    let r = router(FakeModel::new(UNSURE), cloud_ok());
    let a = r.route(&call(Placement::Auto)).await.unwrap();
    assert_eq!(
        (a.served_by, a.reason, a.degraded),
        (Tier::Cloud, Reason::LowConfidence, false)
    );
    assert_eq!((a.label.as_str(), a.model.as_str()), ("c", "big@1"));
    assert_eq!(a.edge_confidence, 0.5);
    assert_eq!(a.timing.uplink, ms(5));
    assert_eq!(a.timing.cloud, ms(1));
    // 100 ms budget, 1 ms spent in the edge model, 3 ms reserve.
    let given = cloud_of(&r).timeouts.lock().unwrap()[0];
    assert_eq!(given, ms(96));
    let counted: Vec<_> = r.counters.reasons().collect();
    assert_eq!(counted, vec![(Reason::LowConfidence, 1)]);
}

#[tokio::test(start_paused = true)]
async fn a_late_edge_hands_the_request_to_the_cloud_without_running_its_model() {
    let mut model = FakeModel::new(SURE);
    model.completion = ms(150);
    let r = router(model, cloud_ok());
    let a = r.route(&call(Placement::Auto)).await.unwrap();
    assert_eq!(
        (a.served_by, a.reason),
        (Tier::Cloud, Reason::EdgeOverloaded)
    );
    assert_eq!(r.model.calls.load(Ordering::SeqCst), 0);
}

#[tokio::test(start_paused = true)]
async fn the_links_backlog_counts_in_whether_the_cloud_fits() {
    let r = router(FakeModel::new(UNSURE), cloud_ok());
    r.estimates.observe_rtt(ms(10));
    // Learned: 1 Mbit/s each way (100 bytes 0.8 ms after half the round trip), the cloud's
    // own time 1 ms.
    let one_way = Duration::from_micros(5_800);
    r.estimates
        .observe_exchange(100, one_way, 100, one_way, ms(1));
    // 12.5 kB queued on the uplink: 100 ms of serialization before this call's message.
    *cloud_of(&r).backlog.lock().unwrap() = [12_500, 0];
    let a = r.route(&call(Placement::Auto)).await.unwrap();
    assert_eq!(
        (a.served_by, a.reason),
        (Tier::Edge, Reason::BudgetTooSmall)
    );
    assert_eq!(cloud_of(&r).calls(), 0, "no call was made");
    // The backlog drained: the same call fits.
    *cloud_of(&r).backlog.lock().unwrap() = [0, 0];
    let a = r.route(&call(Placement::Auto)).await.unwrap();
    assert_eq!(
        (a.served_by, a.reason),
        (Tier::Cloud, Reason::LowConfidence)
    );
}

#[tokio::test(start_paused = true)]
async fn a_late_edge_with_no_cloud_in_time_refuses_at_once() {
    for cloud in [None, cloud_ok()] {
        let has_cloud = cloud.is_some();
        let mut model = FakeModel::new(SURE);
        model.completion = ms(150);
        let r = router(model, cloud);
        // A cloud that takes longer than the budget.
        r.estimates.observe_rtt(ms(500));
        let c = call(Placement::Auto);
        let e = r.route(&c).await.unwrap_err();
        assert!(
            matches!(e, ServeError::Batch(BatchError::WouldMiss { .. })),
            "cloud {has_cloud}: {e}"
        );
        assert_eq!(
            c.received.elapsed(),
            Duration::ZERO,
            "refused without waiting"
        );
        assert_eq!(r.model.calls.load(Ordering::SeqCst), 0, "nothing queued");
        assert_eq!(
            tonic::Status::from(e).code(),
            tonic::Code::ResourceExhausted
        );
    }
    // Within its budget the same edge model answers.
    let mut model = FakeModel::new(SURE);
    model.completion = ms(50);
    let r = router(model, None);
    assert_eq!(
        r.route(&call(Placement::Auto)).await.unwrap().reason,
        Reason::Confident
    );
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_goes_to_the_cloud_or_is_refused() {
    let mut model = FakeModel::new(SURE);
    model.full = true;
    let r = router(model, cloud_ok());
    let a = r.route(&call(Placement::Auto)).await.unwrap();
    assert_eq!(
        (a.served_by, a.reason),
        (Tier::Cloud, Reason::EdgeOverloaded)
    );

    // The cloud fails: the fallback tries the edge model, whose queue is still full.
    *cloud_of(&r).outcome.lock().unwrap() = Outcome::Unavailable;
    let e = r.route(&call(Placement::Auto)).await.unwrap_err();
    assert!(
        matches!(e, ServeError::Batch(BatchError::QueueFull(_))),
        "{e}"
    );

    // No cloud at all: refused at once.
    let mut model = FakeModel::new(SURE);
    model.full = true;
    let alone = router(model, None);
    let e = alone.route(&call(Placement::Auto)).await.unwrap_err();
    assert!(
        matches!(e, ServeError::Batch(BatchError::QueueFull(_))),
        "{e}"
    );
    assert_eq!(
        tonic::Status::from(e).code(),
        tonic::Code::ResourceExhausted
    );
}

#[tokio::test(start_paused = true)]
async fn placements_are_obeyed() {
    let r = router(FakeModel::new(UNSURE), cloud_ok());
    let a = r.route(&call(Placement::EdgeOnly)).await.unwrap();
    assert_eq!(
        (a.served_by, a.reason, a.degraded),
        (Tier::Edge, Reason::Placement, false)
    );
    assert_eq!(cloud_of(&r).calls(), 0);

    let a = r.route(&call(Placement::CloudOnly)).await.unwrap();
    assert_eq!((a.served_by, a.reason), (Tier::Cloud, Reason::Placement));
    assert_eq!(
        r.model.calls.load(Ordering::SeqCst),
        2,
        "the fallback was ready first"
    );

    let mut concrete = call(Placement::Auto);
    concrete.model = "tiny".into();
    let a = r.route(&concrete).await.unwrap();
    assert_eq!((a.served_by, a.reason), (Tier::Edge, Reason::Placement));
    assert_eq!(cloud_of(&r).calls(), 1);

    let alone = router(FakeModel::new(SURE), None);
    let a = alone.route(&call(Placement::CloudOnly)).await.unwrap();
    assert_eq!(
        (a.served_by, a.reason, a.degraded),
        (Tier::Edge, Reason::CloudUnavailable, true)
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_or_refusing_cloud_is_answered_by_the_edge() {
    for outcome in [Outcome::Unavailable, Outcome::Refused] {
        let r = router(FakeModel::new(UNSURE), Some(FakeCloud::new(ms(1), outcome)));
        let a = r.route(&call(Placement::Auto)).await.unwrap();
        assert_eq!(
            (a.served_by, a.reason, a.degraded),
            (Tier::Edge, Reason::CloudUnavailable, true),
            "{outcome:?}"
        );
    }
    let alone = router(FakeModel::new(UNSURE), None);
    let a = alone.route(&call(Placement::Auto)).await.unwrap();
    assert_eq!(a.reason, Reason::CloudUnavailable);
}

#[tokio::test(start_paused = true)]
async fn a_late_cloud_is_answered_by_the_edge_within_the_budget() {
    let r = router(
        FakeModel::new(UNSURE),
        Some(FakeCloud::new(ms(500), Outcome::Answer)),
    );
    let c = call(Placement::Auto);
    let a = r.route(&c).await.unwrap();
    assert_eq!(
        (a.served_by, a.reason, a.degraded),
        (Tier::Edge, Reason::CloudTimeout, true)
    );
    let elapsed = c.received.elapsed();
    assert!(elapsed <= ms(100), "{elapsed:?}");
    assert!(elapsed >= ms(96), "the cloud had its time: {elapsed:?}");
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_open_the_circuit_and_the_cloud_is_left_alone() {
    let r = router(
        FakeModel::new(UNSURE),
        Some(FakeCloud::new(ms(1), Outcome::Unavailable)),
    );
    for _ in 0..3 {
        r.route(&call(Placement::Auto)).await.unwrap();
    }
    let a = r.route(&call(Placement::Auto)).await.unwrap();
    assert_eq!((a.reason, a.degraded), (Reason::CircuitOpen, true));
    let a = r.route(&call(Placement::CloudOnly)).await.unwrap();
    assert_eq!((a.served_by, a.reason), (Tier::Edge, Reason::CircuitOpen));
    assert_eq!(cloud_of(&r).calls(), 3);
}

#[tokio::test(start_paused = true)]
async fn after_the_cool_down_one_trial_goes_and_its_success_closes_the_circuit() {
    let r = router(
        FakeModel::new(UNSURE),
        Some(FakeCloud::new(ms(20), Outcome::Unavailable)),
    );
    for _ in 0..3 {
        r.route(&call(Placement::Auto)).await.unwrap();
    }
    tokio::time::advance(ms(1001)).await;
    *cloud_of(&r).outcome.lock().unwrap() = Outcome::Answer;
    // Two unsure requests at once: one is the trial, the other must not call.
    let (one, two) = (call(Placement::Auto), call(Placement::Auto));
    let (first, second) = tokio::join!(r.route(&one), r.route(&two));
    let mut reasons = [first.unwrap().reason, second.unwrap().reason];
    reasons.sort_by_key(|r| r.index());
    assert_eq!(reasons, [Reason::LowConfidence, Reason::CircuitOpen]);
    assert_eq!(cloud_of(&r).calls(), 4);
    assert_eq!(r.circuit_view(), CircuitView::Closed);
    let a = r.route(&call(Placement::Auto)).await.unwrap();
    assert_eq!(a.reason, Reason::LowConfidence);
}

#[tokio::test(start_paused = true)]
async fn a_cloud_not_expected_in_time_is_not_asked() {
    let r = router(FakeModel::new(UNSURE), cloud_ok());
    r.estimates.observe_rtt(ms(200));
    let a = r.route(&call(Placement::Auto)).await.unwrap();
    assert_eq!(
        (a.served_by, a.reason, a.degraded),
        (Tier::Edge, Reason::BudgetTooSmall, true)
    );
    assert_eq!(cloud_of(&r).calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_budget_comes_from_the_request_the_deadline_or_the_default() {
    let slow = || Some(FakeCloud::new(ms(1000), Outcome::Answer));
    let r = router(FakeModel::new(UNSURE), slow());
    let mut own = call(Placement::Auto);
    own.budget_ms = 30;
    r.route(&own).await.unwrap();
    let mut deadline = call(Placement::Auto);
    deadline.deadline = Some(ms(20));
    deadline.budget_ms = 50;
    r.route(&deadline).await.unwrap();
    let mut capped = call(Placement::Auto);
    capped.budget_ms = 5_000;
    r.route(&capped).await.unwrap();
    let given: Vec<u64> = cloud_of(&r)
        .timeouts
        .lock()
        .unwrap()
        .iter()
        .map(|t| t.as_millis() as u64)
        .collect();
    // Each less the 1 ms model time and the 3 ms reserve.
    assert_eq!(given, vec![26, 16, 96]);
}

#[tokio::test(start_paused = true)]
async fn each_confidence_metric_and_the_request_threshold_decide() {
    // Max probability 0.6, margin 0.2, normalised entropy about 0.16.
    let probabilities = [0.6, 0.4, 0.0];
    let cases = [
        (ConfidenceMetric::MaxProbability, 0.55, Reason::Confident),
        (ConfidenceMetric::Margin, 0.55, Reason::LowConfidence),
        (ConfidenceMetric::Margin, 0.15, Reason::Confident),
        (ConfidenceMetric::Entropy, 0.15, Reason::Confident),
        (ConfidenceMetric::Entropy, 0.5, Reason::LowConfidence),
    ];
    for (metric, threshold, expected) in cases {
        let r = router(FakeModel::new(probabilities), cloud_ok());
        *r.policy.write().unwrap() = Policy {
            threshold,
            metric,
            ..policy()
        };
        let a = r.route(&call(Placement::Auto)).await.unwrap();
        assert_eq!(a.reason, expected, "{metric:?} at {threshold}");
    }
    let r = router(FakeModel::new(probabilities), cloud_ok());
    let mut strict = call(Placement::Auto);
    strict.min_confidence = Some(0.7);
    assert_eq!(
        r.route(&strict).await.unwrap().reason,
        Reason::LowConfidence
    );
}

mod property {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the fakes' delays and outcomes, an answer comes within its budget plus
        /// the reserve (the edge model itself is given no more than the reserve).
        #[test]
        fn every_answer_comes_within_its_budget(
            edge_us in 0u64..3_000,
            cloud_ms in 0u64..400,
            budget_ms in 1u32..300,
            completion_ms in 0u64..200,
            outcome in 0usize..3,
            placement in 0usize..3,
            sure in any::<bool>(),
            rtt_ms in proptest::option::of(1u64..300),
        ) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut model = FakeModel::new(if sure { SURE } else { UNSURE });
                model.delay = Duration::from_micros(edge_us);
                model.completion = ms(completion_ms);
                let outcome = [Outcome::Answer, Outcome::Unavailable, Outcome::Refused][outcome];
                let r = router(model, Some(FakeCloud::new(ms(cloud_ms), outcome)));
                if let Some(rtt) = rtt_ms {
                    r.estimates.observe_rtt(ms(rtt));
                }
                let mut c = call([Placement::Auto, Placement::EdgeOnly, Placement::CloudOnly][placement]);
                c.budget_ms = budget_ms;
                let result = r.route(&c).await;
                let elapsed = c.received.elapsed();
                let limit = ms(u64::from(budget_ms)) + r.reserve.get();
                prop_assert!(elapsed <= limit, "{result:?} took {elapsed:?}, limit {limit:?}");
                match result {
                    Ok(a) => prop_assert_eq!(a.degraded, a.reason.is_fallback()),
                    // Only an edge model expected to be late is refused, never for anything else.
                    Err(e) => {
                        prop_assert!(completion_ms > 0, "{e}");
                        prop_assert_eq!(
                            tonic::Status::from(e).code(),
                            tonic::Code::ResourceExhausted
                        );
                    }
                }
                Ok(())
            })?;
        }
    }
}

#[tokio::test(start_paused = true)]
async fn only_the_clouds_answers_are_kept_as_hard_examples() {
    let dir = tempfile::tempdir().unwrap();
    let store =
        HardExampleStore::open(dir.path(), crate::hard_examples::DEFAULT_MAX_BYTES).unwrap();
    let r = router(FakeModel::new(UNSURE), cloud_ok()).with_hard_examples(Some(store.clone()));
    let a = r.route(&call(Placement::Auto)).await.unwrap();
    assert_eq!(a.reason, Reason::LowConfidence);
    // The edge answers these: nothing to keep.
    *cloud_of(&r).outcome.lock().unwrap() = Outcome::Unavailable;
    let a = r.route(&call(Placement::Auto)).await.unwrap();
    assert_eq!(a.reason, Reason::CloudUnavailable);
    let sure = router(FakeModel::new(SURE), cloud_ok()).with_hard_examples(Some(store.clone()));
    assert_eq!(
        sure.route(&call(Placement::Auto)).await.unwrap().reason,
        Reason::Confident
    );
    // An overloaded edge sends the request on without running its model.
    let mut late = FakeModel::new(SURE);
    late.completion = ms(150);
    let late = router(late, cloud_ok()).with_hard_examples(Some(store.clone()));
    let a = late.route(&call(Placement::Auto)).await.unwrap();
    assert_eq!(a.reason, Reason::EdgeOverloaded);

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let records = loop {
        let records = crate::hard_examples::read_dir(dir.path()).unwrap().records;
        if records.len() >= 2 || std::time::Instant::now() > deadline {
            break records;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(records.len(), 2, "{records:?}");
    let (low, overloaded) = (&records[0], &records[1]);
    assert_eq!(low.reason, "LOW_CONFIDENCE");
    assert_eq!(low.id, "r1");
    assert_eq!(low.input, vec![0.0, 0.5, 1.0, 0.25]);
    assert_eq!(low.input_shape, vec![4]);
    assert_eq!(low.edge_probabilities, UNSURE.to_vec());
    assert_eq!((low.cloud_class, low.cloud_label.as_str()), (2, "c"));
    assert_eq!(low.cloud_probabilities, vec![0.01, 0.02, 0.97]);
    assert_eq!(
        (low.edge_model.as_str(), low.cloud_model.as_str()),
        ("tiny@3", "big@1")
    );
    assert_eq!(overloaded.reason, "EDGE_OVERLOADED");
    assert!(overloaded.edge_probabilities.is_empty());
    assert_eq!(overloaded.edge_model, "tiny@3");
    assert_eq!(store.stats().dropped.load(Ordering::Relaxed), 0);
}

//! The load generator behind `edgeinfer bench` and `edgeinfer sweep`: requests over the MNIST
//! test set, paced one of two ways, each outcome counted in a [`Tally`].
//!
//! - closed loop: `concurrency` workers, each sending its next request when its previous answer
//!   arrives; latency is measured from the actual send.
//! - open loop: requests are scheduled at a rate ([`Schedule`]: evenly or as a Poisson process)
//!   by a dedicated OS thread (its sleep is precise to tens of microseconds, where tokio's timer
//!   rounds up to whole milliseconds), and latency is measured from each request's *scheduled*
//!   time, so a slow server cannot make the generator send less and hide its own slowness
//!   (coordinated omission).

use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use edgeinfer_model::mnist::{self, Dataset};
use futures::StreamExt;
use indicatif::ProgressBar;
use tokio::time::Instant;

use super::schedule::{Arrivals, Schedule};
use super::tally::Tally;

// `sweep` names these through this module; they live where their concept does.
pub use super::request::{OipDtype, PlacementArg, Protocol, RequestOptions, status_error};
pub use super::target::{Target, TlsArgs};

/// Loads the MNIST test set from the project's data directory (or `EDGEINFER_DATA_DIR`).
pub fn mnist_test_set() -> Result<Dataset> {
    let dir = mnist::default_data_dir();
    let data = mnist::load_test(&dir).with_context(|| {
        format!(
            "cannot load the MNIST test set from {} (set {} to the directory holding t10k-*.gz)",
            dir.display(),
            mnist::ENV_DATA_DIR
        )
    })?;
    anyhow::ensure!(
        !data.is_empty(),
        "the MNIST test set in {} is empty",
        dir.display()
    );
    Ok(data)
}

/// When a run stops sending.
#[derive(Clone, Copy, Debug)]
pub enum Stop {
    Requests(u64),
    Duration(Duration),
}

/// How a run paces its requests.
#[derive(Clone, Copy, Debug)]
pub enum Pacing {
    Closed { concurrency: usize },
    Open { rate: f64, max_in_flight: usize },
}

/// One run of load.
#[derive(Clone, Debug)]
pub struct LoadSpec {
    pub protocol: Protocol,
    pub stop: Stop,
    pub pacing: Pacing,
    pub options: RequestOptions,
    /// Answers within this time count as within budget.
    pub within_budget: Duration,
    /// Index of the first test image; later requests take the following ones, cycling.
    pub first_index: usize,
}

/// Runs `spec` against `target` with `inputs` and counts what happened; an open loop sends
/// evenly spaced requests.
pub async fn run(
    target: &Target,
    inputs: &Dataset,
    spec: &LoadSpec,
    progress: &ProgressBar,
) -> Result<Tally> {
    run_with_arrivals(target, inputs, spec, Arrivals::Uniform, 0, progress).await
}

/// [`run`], with an open loop's arrival process and its seed chosen.
pub async fn run_with_arrivals(
    target: &Target,
    inputs: &Dataset,
    spec: &LoadSpec,
    arrivals: Arrivals,
    seed: u64,
    progress: &ProgressBar,
) -> Result<Tally> {
    let tally = Arc::new(Mutex::new(Tally::new()));
    let started = Instant::now();
    match spec.pacing {
        Pacing::Closed { concurrency } => {
            closed_loop(target, inputs, spec, concurrency, &tally, progress).await
        }
        Pacing::Open {
            rate,
            max_in_flight,
        } => {
            anyhow::ensure!(
                rate.is_finite() && rate > 0.0,
                "an open loop's rate must be a positive number of requests per second, not {rate}"
            );
            let schedule = Schedule::new(rate, arrivals, seed);
            open_loop(
                target,
                inputs,
                spec,
                schedule,
                max_in_flight,
                &tally,
                progress,
            )
            .await?
        }
    }
    let mut tally = Arc::try_unwrap(tally)
        .map_err(|_| anyhow::anyhow!("a request task outlived its run"))?
        .into_inner()
        .map_err(|_| anyhow::anyhow!("a request task panicked"))?;
    tally.elapsed = started.elapsed();
    Ok(tally)
}

/// Sends request number `i` (cycling over the inputs) and records its outcome, with latency
/// counted from `since`.
async fn send_and_record(
    target: &Target,
    inputs: &Dataset,
    spec: &LoadSpec,
    i: u64,
    since: Instant,
    tally: &Mutex<Tally>,
) {
    let index = (spec.first_index + i as usize) % inputs.len();
    let result = target
        .classify(
            spec.protocol,
            &spec.options,
            format!("bench-{i}"),
            inputs.image(index),
        )
        .await;
    let latency = since.elapsed();
    tally.lock().expect("tally lock").record(
        latency,
        result,
        inputs.labels[index],
        spec.within_budget,
    );
}

async fn closed_loop(
    target: &Target,
    inputs: &Dataset,
    spec: &LoadSpec,
    concurrency: usize,
    tally: &Mutex<Tally>,
    progress: &ProgressBar,
) {
    let issued = AtomicU64::new(0);
    let deadline = match spec.stop {
        Stop::Duration(d) => Some(Instant::now() + d),
        Stop::Requests(_) => None,
    };
    let worker = || async {
        loop {
            if deadline.is_some_and(|d| Instant::now() >= d) {
                break;
            }
            let i = issued.fetch_add(1, Ordering::Relaxed);
            if let Stop::Requests(n) = spec.stop
                && i >= n
            {
                break;
            }
            send_and_record(target, inputs, spec, i, Instant::now(), tally).await;
            progress.inc(1);
        }
    };
    futures::future::join_all((0..concurrency).map(|_| worker())).await;
}

async fn open_loop(
    target: &Target,
    inputs: &Dataset,
    spec: &LoadSpec,
    schedule: Schedule,
    max_in_flight: usize,
    tally: &Mutex<Tally>,
    progress: &ProgressBar,
) -> Result<()> {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, Instant)>();
    let stop = spec.stop;
    let start = Instant::now();
    let start_std = start.into_std();
    // The schedule runs on its own thread: std's sleep wakes within tens of microseconds of
    // the scheduled time, where tokio's timer would add up to a millisecond to every latency.
    let scheduler = std::thread::Builder::new()
        .name("bench-schedule".into())
        .spawn(move || {
            for (i, offset) in (0u64..).zip(schedule) {
                match stop {
                    Stop::Requests(n) if i >= n => break,
                    Stop::Duration(d) if offset >= d => break,
                    _ => {}
                }
                let scheduled = start_std + offset;
                let now = std::time::Instant::now();
                if scheduled > now {
                    std::thread::sleep(scheduled - now);
                }
                if tx.send((i, Instant::from_std(scheduled))).is_err() {
                    break;
                }
            }
        })
        .context("cannot start the scheduling thread")?;

    let lag = Mutex::new(hdrhistogram::Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?);
    // Requests run concurrently within this task (no spawn), so they may borrow the target,
    // the inputs and the tally; the FuturesUnordered keeps them polled, and its length is the
    // number in flight. At the cap, scheduled requests wait in the channel, their latency
    // clock already running.
    let mut running = futures::stream::FuturesUnordered::new();
    loop {
        tokio::select! {
            biased;
            Some(()) = running.next(), if !running.is_empty() => {}
            next = rx.recv(), if running.len() < max_in_flight => {
                let Some((i, scheduled)) = next else { break };
                lag.lock()
                    .expect("lag lock")
                    .saturating_record(scheduled.elapsed().as_micros() as u64);
                running.push(async move {
                    send_and_record(target, inputs, spec, i, scheduled, tally).await;
                    progress.inc(1);
                });
            }
        }
    }
    while running.next().await.is_some() {}
    scheduler
        .join()
        .map_err(|_| anyhow::anyhow!("the scheduling thread panicked"))?;
    tally.lock().expect("tally lock").schedule_lag = Some(lag.into_inner().expect("lag lock"));
    Ok(())
}

#[cfg(test)]
mod tests {
    //! The load generator against the fake server (see `fake_server`), so its counting is
    //! tested exactly, with no model.

    use super::super::fake_server::{self, dataset};
    use super::super::request::Stage;
    use super::*;

    fn spec(protocol: Protocol, stop: Stop, pacing: Pacing) -> LoadSpec {
        LoadSpec {
            protocol,
            stop,
            pacing,
            options: RequestOptions {
                budget_ms: Some(100),
                placement: PlacementArg::Auto,
                min_confidence: None,
                model: None,
                oip_dtype: OipDtype::Uint8,
                timeout: Duration::from_secs(5),
            },
            within_budget: Duration::from_secs(5),
            first_index: 0,
        }
    }

    fn check_counts(tally: &Tally, requests: u64) {
        // Per 100 requests: one refused, ten answered wrongly, 25 by the "cloud".
        let rounds = requests / 100;
        assert_eq!(tally.requests, requests);
        assert_eq!(tally.errors.get("RESOURCE_EXHAUSTED"), Some(&rounds));
        assert_eq!(tally.ok, requests - rounds);
        assert_eq!(tally.correct, tally.ok - 10 * rounds);
        assert_eq!(tally.served_cloud, 25 * rounds);
        assert_eq!(tally.served_edge, tally.ok - 25 * rounds);
        assert_eq!(tally.reasons.get("LOW_CONFIDENCE"), Some(&(25 * rounds)));
        assert_eq!(tally.within_budget, tally.ok);
        assert_eq!(tally.latency.len(), tally.ok);
        // Every answer carries a timing; only the cloud's answers spent time on the link.
        assert_eq!(tally.timing(Stage::Queue).len(), tally.ok);
        assert_eq!(tally.timing(Stage::Total).len(), tally.ok);
        for stage in [Stage::Uplink, Stage::Cloud, Stage::Downlink] {
            assert_eq!(tally.timing(stage).len(), 25 * rounds, "{stage:?}");
        }
        assert_eq!(tally.timing(Stage::Cloud).max(), 2000);
        assert_eq!(tally.timing(Stage::Uplink).min(), 1000);
    }

    async fn fake_target(connections: usize) -> Target {
        Target::connect(
            &fake_server::start().await,
            connections,
            &TlsArgs::default(),
        )
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn closed_loop_counts_every_outcome_in_both_protocols() {
        let target = fake_target(3).await;
        let data = dataset();
        for protocol in [Protocol::Native, Protocol::Oip] {
            let s = spec(
                protocol,
                Stop::Requests(300),
                Pacing::Closed { concurrency: 8 },
            );
            let tally = run(&target, &data, &s, &ProgressBar::hidden())
                .await
                .unwrap();
            check_counts(&tally, 300);
        }
    }

    #[tokio::test]
    async fn oip_fp32_inputs_are_scaled_pixels() {
        let target = fake_target(1).await;
        let mut s = spec(
            Protocol::Oip,
            Stop::Requests(100),
            Pacing::Closed { concurrency: 2 },
        );
        s.options.oip_dtype = OipDtype::Fp32;
        let tally = run(&target, &dataset(), &s, &ProgressBar::hidden())
            .await
            .unwrap();
        check_counts(&tally, 100);
    }

    #[tokio::test]
    async fn open_loop_sends_at_the_rate_and_counts_from_the_schedule() {
        let target = fake_target(2).await;
        let s = spec(
            Protocol::Native,
            Stop::Requests(200),
            Pacing::Open {
                rate: 2000.0,
                max_in_flight: 64,
            },
        );
        for arrivals in [Arrivals::Uniform, Arrivals::Poisson] {
            let tally =
                run_with_arrivals(&target, &dataset(), &s, arrivals, 3, &ProgressBar::hidden())
                    .await
                    .unwrap();
            check_counts(&tally, 200);
            let lag = tally
                .schedule_lag
                .as_ref()
                .expect("open loop records its lag");
            assert_eq!(lag.len(), 200);
            // The last of 200 evenly spaced sends at 2000/s leaves 99.5 ms after the first;
            // a Poisson schedule's last one leaves when its seeded draws say.
            let last = Schedule::new(2000.0, arrivals, 3).nth(199).unwrap();
            assert!(
                tally.elapsed >= last,
                "{arrivals:?}: {:?} < {last:?}",
                tally.elapsed
            );
        }
    }

    #[tokio::test]
    async fn an_open_loop_without_a_positive_rate_is_refused() {
        let target = fake_target(1).await;
        for rate in [0.0, -5.0, f64::NAN, f64::INFINITY] {
            let s = spec(
                Protocol::Native,
                Stop::Requests(10),
                Pacing::Open {
                    rate,
                    max_in_flight: 4,
                },
            );
            let err = run(&target, &dataset(), &s, &ProgressBar::hidden())
                .await
                .unwrap_err();
            assert!(
                format!("{err}").contains("positive number"),
                "{rate}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn duration_stops_a_closed_loop() {
        let target = fake_target(1).await;
        let s = spec(
            Protocol::Native,
            Stop::Duration(Duration::from_millis(200)),
            Pacing::Closed { concurrency: 2 },
        );
        let tally = run(&target, &dataset(), &s, &ProgressBar::hidden())
            .await
            .unwrap();
        assert!(tally.requests > 0);
        assert!(
            tally.elapsed < Duration::from_secs(5),
            "{:?}",
            tally.elapsed
        );
    }
}

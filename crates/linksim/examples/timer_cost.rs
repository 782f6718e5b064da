//! How late a live link delivers, and what its timer costs in CPU, at a message rate.
//!
//! `cargo run --release -p edgeinfer-linksim --example timer_cost -- [RATE] [SECONDS]`
//! (defaults 20000 messages/s for 10 s) sends RATE messages a second through a [`Link`] whose
//! one-way delay is 0.5 ms plus a log-normal jitter (median 0.5 ms, p99 3 ms), each from its own
//! task as a gRPC call would, and reports for each way of waiting:
//! - lateness: how much longer than its simulated one-way time each message took to come back
//!   to its task (timer, wake-up and scheduling together), p50 / p99 / max;
//! - CPU: the process's user + system time over the run as a share of one core, and for the
//!   precise timer its thread's share.
//!
//! `none` is the same load with a link that has no delay (no timer involved): the difference to
//! it is what waiting costs. CPU times come from /proc (clock ticks of 10 ms, so over 10 s
//! they are good to 0.1 % of a core).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use edgeinfer_linksim::{DelayProfile, Direction, DirectionProfile, Link, LinkProfile, LinkTimer};
use tokio::time::{Instant, MissedTickBehavior};

/// Clock ticks per second of /proc's CPU times (`getconf CLK_TCK` on Linux).
const TICKS_PER_S: f64 = 100.0;

fn profile(delay_ms: f64, jitter: bool) -> LinkProfile {
    let dir = DirectionProfile {
        delay: DelayProfile {
            base_ms: delay_ms,
            jitter_median_ms: if jitter { 0.5 } else { 0.0 },
            jitter_p99_ms: if jitter { 3.0 } else { 0.0 },
            correlation: 0.0,
        },
        ..DirectionProfile::unlimited()
    };
    LinkProfile {
        name: "timer-cost".into(),
        description: String::new(),
        uplink: dir.clone(),
        downlink: dir,
        handover: None,
    }
}

/// User + system clock ticks of a /proc stat file (fields 14 and 15).
fn cpu_ticks(stat: &std::path::Path) -> u64 {
    let text = std::fs::read_to_string(stat).unwrap_or_default();
    let after = text.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    fields.get(11).copied().unwrap_or(0) + fields.get(12).copied().unwrap_or(0)
}

/// The stat file of the precise timer's thread, once it exists.
fn timer_thread() -> Option<std::path::PathBuf> {
    std::fs::read_dir("/proc/self/task").ok()?.find_map(|t| {
        let dir = t.ok()?.path();
        let comm = std::fs::read_to_string(dir.join("comm")).ok()?;
        (comm.trim() == "linksim-timer").then(|| dir.join("stat"))
    })
}

fn pct(v: &mut [u64], q: f64) -> f64 {
    v.sort_unstable();
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i] as f64 / 1e3
}

async fn run(name: &str, link: Link, rate: u64, seconds: u64) {
    let late_ns = Arc::new(Mutex::new(Vec::with_capacity((rate * seconds) as usize)));
    let process = std::path::Path::new("/proc/self/stat");
    let thread = timer_thread();
    let (cpu0, thread0) = (cpu_ticks(process), thread.as_deref().map(cpu_ticks));
    let start = std::time::Instant::now();

    let mut tick = tokio::time::interval(Duration::from_millis(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let per_tick = rate / 1000;
    let mut tasks = Vec::new();
    for _ in 0..seconds * 1000 {
        tick.tick().await;
        for _ in 0..per_tick {
            let link = link.clone();
            let late_ns = Arc::clone(&late_ns);
            tasks.push(tokio::spawn(async move {
                let sent = Instant::now();
                let one_way = link
                    .transmit(Direction::Uplink, 64)
                    .await
                    .unwrap_or_default();
                let late = sent.elapsed().saturating_sub(one_way);
                late_ns.lock().unwrap().push(late.as_nanos() as u64);
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    let wall = start.elapsed().as_secs_f64();
    let cpu = (cpu_ticks(process) - cpu0) as f64 / TICKS_PER_S / wall * 100.0;
    let thread = timer_thread().map(|t| {
        let before = thread0.unwrap_or(0);
        (cpu_ticks(&t) - before) as f64 / TICKS_PER_S / wall * 100.0
    });
    let mut late = std::mem::take(&mut *late_ns.lock().unwrap());
    let n = late.len();
    let (p50, p99, max) = (
        pct(&mut late, 0.5),
        pct(&mut late, 0.99),
        pct(&mut late, 1.0),
    );
    println!(
        "{name:<8} {n:>8} msgs  late p50 {p50:>7.1} µs  p99 {p99:>7.1} µs  max {max:>8.1} µs  \
         CPU {cpu:>5.1} % of a core{}",
        thread.map_or(String::new(), |t| format!(" (timer thread {t:.1} %)"))
    );
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rate: u64 = args.next().map_or(20_000, |a| a.parse().expect("RATE"));
    let seconds: u64 = args.next().map_or(10, |a| a.parse().expect("SECONDS"));
    println!("{rate} messages/s for {seconds} s, 2 tokio workers");
    run("none", Link::new(profile(0.0, false), 1), rate, seconds).await;
    run("tokio", Link::new(profile(0.5, true), 1), rate, seconds).await;
    let precise = Link::new(profile(0.5, true), 1).with_timer(LinkTimer::Precise);
    run("precise", precise, rate, seconds).await;
}

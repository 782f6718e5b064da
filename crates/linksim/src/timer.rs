//! When a live link wakes a message: tokio's timer, or a precise one.
//!
//! tokio's timer wheel has a 1 ms tick and rounds every sleep up to the next tick, so on tokio
//! time a message arrives up to 1 ms after its simulated instant; on a 1 ms URLLC round trip
//! that is the whole budget. [`LinkTimer::Precise`] wakes it instead from one timer thread
//! per process, blocked on a Linux `timerfd` armed for the earliest pending instant. A
//! `timerfd` is an hrtimer with no timer slack (unlike `nanosleep`, `poll` or a futex wait, which
//! the kernel may defer by the thread's 50 µs slack), so the thread wakes within microseconds of
//! the instant and nothing spins. Each message costs one heap insertion, a `timerfd_settime`
//! when it becomes the earliest, and a share of one wake-up (instants that fall due together
//! are woken together). What that costs and how late it wakes is measured by
//! `cargo run --release -p edgeinfer-linksim --example timer_cost` (figures in the crate's
//! README).
//!
//! The precise timer reads the wall clock, so it is for live links only: on tokio's paused clock
//! (tests) tokio time never reaches its instants. [`LinkTimer::Tokio`] stays the default, which
//! keeps every test on simulated time deterministic.

use tokio::time::Instant;

/// How a live [`crate::Link`] waits for a message's instant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LinkTimer {
    /// tokio's timer: follows tokio's paused clock in tests; live, up to 1 ms late.
    #[default]
    Tokio,
    /// The process's precise timer thread (Linux `timerfd`): tens of microseconds live; never
    /// fires on a paused clock. Where it cannot start, waits as `Tokio` does (with a warning).
    Precise,
}

/// Waits until `due` with `timer`.
pub(crate) async fn sleep_until(timer: LinkTimer, due: Instant) {
    // tokio rounds even a deadline of now up to its next tick: an `ideal` link would cost up
    // to 1 ms per direction.
    if due <= Instant::now() {
        return;
    }
    if timer == LinkTimer::Precise {
        let spin = SPIN_BUDGET.take(due.saturating_duration_since(Instant::now()));
        if let Some(wakeup) = precise::schedule((due - spin).into_std()) {
            // The thread only drops the sender after sending.
            let _ = wakeup.await;
            // The last stretch on a running worker: no wake-up chain (timer thread, then an
            // idle tokio worker) to wait for. Yielding lets the worker's other tasks run.
            while Instant::now() < due {
                tokio::task::yield_now().await;
            }
            return;
        }
    }
    tokio::time::sleep_until(due).await;
}

/// How long before its instant a precise wait is woken, to spin the rest: the wake-up chain's
/// usual latency on a busy 2-core machine, measured with the `timer_cost` example.
const SPIN: std::time::Duration = std::time::Duration::from_micros(200);

/// Spinning costs a core while it lasts, so it is rationed: at most [`SPIN_SHARE`] of one core
/// over time. A link carrying a message at a time (sequential calls) spins for every one; at
/// thousands of messages a second the budget runs out and most waits rely on the wake-up
/// alone, which is then short anyway because the workers are busy.
static SPIN_BUDGET: SpinBudget = SpinBudget::new();

/// The share of one core that spinning may use. Sequential URLLC calls (two waits of 0.4 to
/// 1.2 ms per call of about 1.4 ms with the floor's direct call between, each wanting a 200 µs
/// spin) would spin about 29 % of the time; at 10 % most
/// waits went unspun and came back 0.05 to 0.15 ms late (`edgeinfer link live --profiles urllc`:
/// p50 1.242 to 1.271 ms against 1.185 to 1.228 expected), at 25 % 1.189 to 1.210 against 1.183
/// to 1.202. The spin yields between checks, so a busy worker runs its other tasks meanwhile.
const SPIN_SHARE: f64 = 0.25;

struct SpinBudget {
    /// (last refill, credit left), as nanoseconds since the first use.
    state: std::sync::Mutex<Option<(std::time::Instant, f64)>>,
}

impl SpinBudget {
    const fn new() -> Self {
        SpinBudget {
            state: std::sync::Mutex::new(None),
        }
    }

    /// The spin for a wait of `left`: [`SPIN`] (or `left`, if shorter) when the budget has it,
    /// else nothing.
    fn take(&self, left: std::time::Duration) -> std::time::Duration {
        let want = SPIN.min(left);
        let now = std::time::Instant::now();
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let (last, credit) = state.get_or_insert((now, SPIN.as_secs_f64() * 10.0));
        // Refill at SPIN_SHARE of real time, holding at most ten spins.
        *credit =
            (*credit + (now - *last).as_secs_f64() * SPIN_SHARE).min(SPIN.as_secs_f64() * 10.0);
        *last = now;
        if *credit >= want.as_secs_f64() {
            *credit -= want.as_secs_f64();
            want
        } else {
            std::time::Duration::ZERO
        }
    }
}

/// How early the precise timer may wake an instant to wake it with an earlier one: a wake-up
/// costs more than this much precision is worth.
const COALESCE: std::time::Duration = std::time::Duration::from_micros(20);

#[cfg(target_os = "linux")]
mod precise {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    use std::io::Read;
    use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
    use std::time::{Duration, Instant};

    use rustix::time::{
        Itimerspec, TimerfdClockId, TimerfdFlags, TimerfdTimerFlags, Timespec, timerfd_create,
        timerfd_settime,
    };
    use tokio::sync::oneshot;

    /// The timer shared by every precise link of the process.
    struct Wheel {
        pending: Mutex<Pending>,
        /// The timerfd; the thread blocks reading it, schedulers re-arm it.
        fd: std::os::fd::OwnedFd,
    }

    #[derive(Default)]
    struct Pending {
        heap: BinaryHeap<Reverse<Entry>>,
        sequence: u64,
    }

    struct Entry {
        at: Instant,
        sequence: u64,
        wake: oneshot::Sender<()>,
    }

    impl PartialEq for Entry {
        fn eq(&self, other: &Self) -> bool {
            (self.at, self.sequence) == (other.at, other.sequence)
        }
    }
    impl Eq for Entry {}
    impl PartialOrd for Entry {
        fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
            Some(self.cmp(other))
        }
    }
    impl Ord for Entry {
        fn cmp(&self, other: &Self) -> std::cmp::Ordering {
            (self.at, self.sequence).cmp(&(other.at, other.sequence))
        }
    }

    /// The wheel, started on first use; `None` when the system refused a timerfd or a thread.
    fn wheel() -> Option<&'static Arc<Wheel>> {
        static WHEEL: OnceLock<Option<Arc<Wheel>>> = OnceLock::new();
        WHEEL
            .get_or_init(|| match start() {
                Ok(wheel) => Some(wheel),
                Err(e) => {
                    tracing::warn!(error = %e, "no precise link timer: using tokio's (1 ms ticks)");
                    None
                }
            })
            .as_ref()
    }

    fn start() -> std::io::Result<Arc<Wheel>> {
        let fd = timerfd_create(TimerfdClockId::Monotonic, TimerfdFlags::CLOEXEC)?;
        let reader = std::fs::File::from(fd.try_clone()?);
        let wheel = Arc::new(Wheel {
            pending: Mutex::new(Pending::default()),
            fd,
        });
        let shared = Arc::clone(&wheel);
        std::thread::Builder::new()
            .name("linksim-timer".into())
            .spawn(move || run(&shared, reader))?;
        Ok(wheel)
    }

    /// Registers a wake-up at `at`; `None` when there is no precise timer.
    pub(super) fn schedule(at: Instant) -> Option<oneshot::Receiver<()>> {
        let wheel = wheel()?;
        let (wake, wakeup) = oneshot::channel();
        let mut pending = wheel.lock();
        let sequence = pending.sequence;
        pending.sequence += 1;
        let earliest = pending.heap.peek().is_none_or(|e| at < e.0.at);
        pending.heap.push(Reverse(Entry { at, sequence, wake }));
        if earliest {
            wheel.arm(at);
        }
        Some(wakeup)
    }

    impl Wheel {
        fn lock(&self) -> MutexGuard<'_, Pending> {
            // Nothing panics while the lock is held; a poisoned lock is still consistent.
            self.pending.lock().unwrap_or_else(|e| e.into_inner())
        }

        /// Arms the timerfd for `at` (relative to now: std's `Instant` is CLOCK_MONOTONIC but
        /// does not expose its value). A zero value would disarm it, so a past instant is 1 ns.
        fn arm(&self, at: Instant) {
            let left = at
                .saturating_duration_since(Instant::now())
                .max(Duration::from_nanos(1));
            let spec = Itimerspec {
                it_interval: Timespec {
                    tv_sec: 0,
                    tv_nsec: 0,
                },
                it_value: Timespec {
                    tv_sec: left.as_secs() as _,
                    tv_nsec: left.subsec_nanos() as _,
                },
            };
            if let Err(e) = timerfd_settime(&self.fd, TimerfdTimerFlags::empty(), &spec) {
                tracing::error!(error = %e, "cannot arm the precise link timer");
            }
        }
    }

    /// The timer thread: waits for the timerfd, wakes what is due, re-arms for the rest.
    fn run(wheel: &Wheel, mut reader: std::fs::File) {
        let mut expirations = [0u8; 8];
        let mut due = Vec::new();
        loop {
            match reader.read_exact(&mut expirations) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "precise link timer failed; its waits never end");
                    return;
                }
            }
            {
                let mut pending = wheel.lock();
                let horizon = Instant::now() + super::COALESCE;
                while pending.heap.peek().is_some_and(|e| e.0.at <= horizon) {
                    due.push(pending.heap.pop().expect("peeked").0.wake);
                }
                if let Some(next) = pending.heap.peek() {
                    wheel.arm(next.0.at);
                }
            }
            for wake in due.drain(..) {
                // A receiver dropped (its message's sender gave up) is no error.
                let _ = wake.send(());
            }
        }
    }
}

#[cfg(not(target_os = "linux"))]
mod precise {
    /// No timerfd here: the precise timer falls back to tokio's.
    pub(super) fn schedule(_at: std::time::Instant) -> Option<tokio::sync::oneshot::Receiver<()>> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// On the real clock: each wait ends at its instant or after (or at most `COALESCE` before,
    /// woken with an earlier one), in the order of the instants whatever the order they were
    /// scheduled in. (How late is measured by the example, not asserted here.)
    #[tokio::test]
    async fn precise_waits_end_after_their_instants_in_order() {
        let start = Instant::now();
        let offsets_us = [3000u64, 500, 2000, 1000, 1000, 50];
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        for (i, us) in offsets_us.into_iter().enumerate() {
            let tx = tx.clone();
            let due = start + Duration::from_micros(us);
            tokio::spawn(async move {
                sleep_until(LinkTimer::Precise, due).await;
                let _ = tx.send((i, Instant::now() + COALESCE >= due));
            });
        }
        drop(tx);
        let mut order = Vec::new();
        while let Some((i, on_time)) = rx.recv().await {
            assert!(on_time, "wait {i} ended before its instant");
            order.push(offsets_us[i]);
        }
        let mut sorted = order.clone();
        sorted.sort_unstable();
        assert_eq!(order, sorted);
    }
}

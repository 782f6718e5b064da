//! A Mahimahi trace file's text: `Trace::parse`, then the lookups the simulator makes on it
//! (opportunity times and the first opportunity at or after an instant) far into its loops.
#![no_main]

use std::time::Duration;

use edgeinfer_fuzz::BoundedAlloc;
use edgeinfer_linksim::Trace;
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(trace) = Trace::parse(text) else {
        return;
    };
    assert!(!trace.is_empty());
    assert!(trace.mean_rate_mbps().is_finite());
    for t in [0u64, 1, 999, 1_000_000, u64::MAX / 4] {
        let at = Duration::from_nanos(t);
        let n = trace.first_at_or_after(at);
        assert!(
            trace.opportunity_time(n) >= at,
            "opportunity {n} before {at:?}"
        );
    }
    for n in [0u64, 1, trace.len() as u64, u64::MAX] {
        let _ = trace.opportunity_time(n);
    }
});

//! A link profile document as `SetLinkProfile` receives it (JSON or TOML), with a trace
//! directory holding one trace file, as `--link-trace-dir` gives the edge. A profile that is
//! accepted also simulates: a few messages each way, never a panic.
#![no_main]

use std::sync::OnceLock;
use std::time::Duration;

use edgeinfer_fuzz::BoundedAlloc;
use edgeinfer_linksim::{Direction, LinkProfile, Simulator, TraceSource};
use libfuzzer_sys::fuzz_target;

#[global_allocator]
static ALLOC: BoundedAlloc = BoundedAlloc;

/// A directory with `ok.trace` in it, made once per process (and left for the OS to clean:
/// libFuzzer ends the process without running destructors).
fn traces() -> &'static TraceSource {
    static DIR: OnceLock<TraceSource> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir =
            std::env::temp_dir().join(format!("edgeinfer-fuzz-traces-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        std::fs::write(dir.join("ok.trace"), "1\n2\n2\n5\n").expect("trace file");
        TraceSource::dir(dir).expect("trace directory")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(profile) = LinkProfile::from_document_in(text, traces()) else {
        return;
    };
    let mut sim = Simulator::new(&profile, 7);
    let mut at = Duration::ZERO;
    for i in 0..16u32 {
        let dir = if i % 2 == 0 {
            Direction::Uplink
        } else {
            Direction::Downlink
        };
        let delivery = sim.send(dir, 64 + 1500 * (i as usize % 3), at);
        at = delivery.settled_at().max(at) + Duration::from_micros(100);
    }
});

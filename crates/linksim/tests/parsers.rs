//! Property tests of the parsers a network peer can reach (`SetLinkProfile` documents and the
//! traces they carry): no input makes them panic, every valid profile is accepted as it was
//! written, and whatever they accept the simulator can run without panicking or hanging.

use std::time::Duration;

use edgeinfer_linksim::{
    DelayProfile, Direction, DirectionProfile, HandoverProfile, InFlight, LinkProfile, LossProfile,
    Simulator, Trace,
};
use proptest::prelude::*;

/// Numbers of every kind, the ones that break arithmetic included.
fn wild_f64() -> impl Strategy<Value = f64> {
    prop_oneof![
        Just(0.0),
        Just(-0.0),
        Just(1.0),
        Just(f64::NAN),
        Just(f64::INFINITY),
        Just(f64::NEG_INFINITY),
        Just(f64::MIN_POSITIVE),
        Just(1e-300),
        Just(1e300),
        -10.0..10.0f64,
        0.0..1e7f64,
        any::<f64>(),
    ]
}

fn wild_direction() -> impl Strategy<Value = DirectionProfile> {
    (
        proptest::option::of(wild_f64()),
        proptest::option::of(proptest::collection::vec(0..i64::MAX as u64, 0..8)),
        [wild_f64(), wild_f64(), wild_f64(), wild_f64()],
        [wild_f64(), wild_f64(), wild_f64(), wild_f64(), wild_f64()],
        any::<u32>(),
    )
        .prop_map(|(bw, trace_ms, d, l, max)| DirectionProfile {
            bandwidth_mbps: bw,
            trace: None,
            trace_ms,
            delay: DelayProfile {
                base_ms: d[0],
                jitter_median_ms: d[1],
                jitter_p99_ms: d[2],
                correlation: d[3],
            },
            loss: LossProfile {
                p: l[0],
                r: l[1],
                loss_good: l[2],
                loss_bad: l[3],
                retransmit_ms: l[4],
                max_retransmissions: max,
            },
        })
}

fn wild_profile() -> impl Strategy<Value = LinkProfile> {
    (
        wild_direction(),
        wild_direction(),
        proptest::option::of((wild_f64(), wild_f64(), wild_f64(), any::<bool>())),
    )
        .prop_map(|(up, down, ho)| LinkProfile {
            name: "wild".into(),
            description: String::new(),
            uplink: up,
            downlink: down,
            handover: ho.map(|(every, median, p99, lose)| HandoverProfile {
                mean_interval_s: every,
                duration_median_ms: median,
                duration_p99_ms: p99,
                in_flight: if lose { InFlight::Lose } else { InFlight::Wait },
            }),
        })
}

fn valid_trace() -> impl Strategy<Value = Vec<u64>> {
    proptest::collection::vec(0..5_000u64, 1..200).prop_map(|mut v| {
        v.sort_unstable();
        let last = v.len() - 1;
        v[last] = v[last].max(1);
        v
    })
}

fn valid_direction() -> impl Strategy<Value = DirectionProfile> {
    let capacity = prop_oneof![
        Just((None, None)),
        Just((Some(0.0), None)),
        (0.001..1e5f64).prop_map(|bw| (Some(bw), None)),
        valid_trace().prop_map(|t| (None, Some(t))),
    ];
    (
        capacity,
        (0.0..100.0f64, 0.0..50.0f64, 1.0..20.0f64, 0.0..0.99f64),
        (
            0.0..1.0f64,
            0.01..1.0f64,
            0.0..1.0f64,
            0.0..1.0f64,
            0.0..50.0f64,
        ),
        0..10u32,
    )
        .prop_map(|((bw, trace_ms), d, l, max)| DirectionProfile {
            bandwidth_mbps: bw,
            trace: None,
            trace_ms,
            delay: DelayProfile {
                base_ms: d.0,
                jitter_median_ms: d.1,
                jitter_p99_ms: d.1 * d.2,
                correlation: d.3,
            },
            loss: LossProfile {
                p: l.0,
                r: l.1,
                loss_good: l.2,
                loss_bad: l.3,
                retransmit_ms: l.4,
                max_retransmissions: max,
            },
        })
}

fn valid_profile() -> impl Strategy<Value = LinkProfile> {
    (
        "[a-z][a-z0-9-]{0,15}",
        valid_direction(),
        valid_direction(),
        proptest::option::of((0.01..100.0f64, 0.0..200.0f64, 1.0..5.0f64, any::<bool>())),
    )
        .prop_map(|(name, up, down, ho)| LinkProfile {
            name,
            description: String::new(),
            uplink: up,
            downlink: down,
            handover: ho.map(|(every, median, ratio, lose)| HandoverProfile {
                mean_interval_s: every,
                duration_median_ms: median,
                duration_p99_ms: median * ratio,
                in_flight: if lose { InFlight::Lose } else { InFlight::Wait },
            }),
        })
}

/// Runs a few exchanges of assorted sizes: an accepted profile must simulate.
fn exercise(profile: &LinkProfile) {
    let mut sim = Simulator::new(profile, 1);
    let mut at = Duration::ZERO;
    for bytes in [0, 1, 64, 1500, 100_000] {
        for dir in Direction::BOTH {
            at = at.max(sim.send(dir, bytes, at).settled_at());
        }
    }
    sim.handovers_by(at);
}

fn json(p: &LinkProfile) -> serde_json::Value {
    serde_json::from_str(&p.to_json()).unwrap()
}

/// Equal trees, numbers within a relative 1e-12.
fn same(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-12 * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

proptest! {
    #[test]
    fn any_text_is_answered_not_panicked_on(text in ".{0,400}") {
        let _ = LinkProfile::from_document(&text);
        let _ = LinkProfile::from_document(&format!("{{{text}"));
        let _ = Trace::parse(&text);
    }

    #[test]
    fn any_numbers_are_refused_or_simulate(profile in wild_profile()) {
        // TOML writes NaN and infinities, so every value reaches the parser.
        let text = profile.to_toml();
        if let Ok(parsed) = LinkProfile::from_document(&text) {
            exercise(&parsed);
        }
    }

    #[test]
    fn valid_profiles_are_accepted_as_written(profile in valid_profile()) {
        let from_toml = LinkProfile::from_document(&profile.to_toml());
        let from_toml = from_toml.map_err(|e| TestCaseError::fail(e.to_string()))?;
        // The toml crate, and serde_json without its `float_roundtrip` feature, may read a float
        // back one unit in the last place away.
        prop_assert!(
            same(&json(&from_toml), &json(&profile)),
            "{}\nvs\n{}", from_toml.to_json(), profile.to_json()
        );
        let from_json = LinkProfile::from_document(&profile.to_json());
        let from_json = from_json.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert!(same(&json(&from_json), &json(&profile)), "{}", from_json.to_json());
        exercise(&profile);
    }

    #[test]
    fn any_trace_lines_are_answered(lines in proptest::collection::vec(
        prop_oneof![any::<u64>().prop_map(|v| v.to_string()), "[ 0-9a-z:-]{0,12}"], 0..50)
    ) {
        let text = lines.join("\n");
        if let Ok(trace) = Trace::parse(&text) {
            prop_assert!(trace.period() > Duration::ZERO);
            let _ = trace.opportunity_time(u64::MAX);
            let _ = trace.first_at_or_after(Duration::MAX);
        }
    }

    #[test]
    fn valid_traces_are_accepted(ms in valid_trace()) {
        let text: String = ms.iter().map(|v| format!("{v}\n")).collect();
        let trace = Trace::parse(&text).unwrap();
        prop_assert_eq!(trace.len(), ms.len());
        prop_assert_eq!(trace.period(), Duration::from_millis(*ms.last().unwrap()));
        prop_assert_eq!(Trace::from_ms(ms), Ok(trace));
    }
}

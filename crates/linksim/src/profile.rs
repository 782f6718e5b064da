//! Link profiles: the parameters of a simulated link, as data.
//!
//! A profile is what an operator writes in a TOML or JSON file, what `SetLinkProfile` carries and
//! what the built-ins ([`crate::builtin`]) are made of. It is plain data with public fields; every
//! way of getting one from text goes through [`LinkProfile::validate`], so a [`crate::Simulator`]
//! never sees a probability above 1 or a negative delay.
//!
//! Units are in the field names (`_ms`, `_s`, `_mbps`) so that a file reads without a manual.
//! Unknown fields are rejected: a misspelt `jiter_p99_ms` must not silently mean "no jitter".
//!
//! Every number has a range (probabilities in [0, 1], times at most an hour, at most 100
//! retransmissions, ...): a document received over the network must not be able to make the
//! simulator loop for ever or overflow its clock. Which files a profile may name depends on who
//! wrote it (see [`crate::files`]).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::files::{self, MAX_PROFILE_BYTES, ReadError, TraceSource};
use crate::trace::Trace;

/// Largest time a profile may give (delays, retransmissions, handover durations), in ms: an
/// hour is far beyond any radio link and far below what could overflow simulated time.
pub const MAX_MS: f64 = 3_600_000.0;

/// Most retransmissions a profile may ask for (RLC allows up to 32; HARQ 4 to 8).
pub const MAX_RETRANSMISSIONS: u32 = 100;

/// The parameters of a simulated link: one [`DirectionProfile`] per direction and the handovers,
/// which interrupt both directions at once.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinkProfile {
    /// Name shown in statistics and status, for example `lte`.
    #[serde(default = "default_name")]
    pub name: String,
    /// One line saying what the profile stands for and where its numbers come from.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// Edge to cloud.
    pub uplink: DirectionProfile,
    /// Cloud to edge.
    pub downlink: DirectionProfile,
    /// Handover interruptions; absent means none. They belong to the link, not to a direction:
    /// while the radio moves to another cell neither direction carries anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handover: Option<HandoverProfile>,
}

fn default_name() -> String {
    "custom".to_owned()
}

/// One direction of a link: how fast it serializes, how long a message then travels, and how
/// the radio loses and retransmits it.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirectionProfile {
    /// Capacity in Mbit/s (10^6 bit/s). Absent means unlimited (no serialization time); 0 means
    /// the direction carries nothing (every message is lost at once). Exclusive with `trace`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bandwidth_mbps: Option<f64>,
    /// A Mahimahi trace replacing `bandwidth_mbps`: one integer millisecond per line, each a
    /// delivery opportunity for 1500 bytes, looping. In a profile file, a relative path is
    /// relative to the file's directory; in a document received over the network, only a bare
    /// file name inside the node's trace directory ([`TraceSource`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<PathBuf>,
    /// The same trace inline: the opportunities' milliseconds, non-decreasing, the last one being
    /// the period. Exclusive with `trace` and `bandwidth_mbps`; at most
    /// [`crate::trace::MAX_OPPORTUNITIES`] entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_ms: Option<Vec<u64>>,
    /// One-way delay after serialization.
    #[serde(default)]
    pub delay: DelayProfile,
    /// Loss and link-layer retransmission.
    #[serde(default)]
    pub loss: LossProfile,
}

/// One-way delay: `base_ms` plus a log-normal jitter given by its median and 99th percentile.
///
/// A shifted log-normal is the usual fit for radio access delays: a floor set by the frame
/// structure and the path, and a right tail from scheduling, retransmissions and queues. Giving
/// it by two percentiles keeps the profile readable against measured figures.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DelayProfile {
    /// Fixed part of the one-way delay.
    #[serde(default)]
    pub base_ms: f64,
    /// Median of the jitter added to `base_ms`; 0 means no jitter.
    #[serde(default)]
    pub jitter_median_ms: f64,
    /// 99th percentile of the jitter; at least `jitter_median_ms`.
    #[serde(default)]
    pub jitter_p99_ms: f64,
    /// Correlation of consecutive jitters of a direction, in [0, 1): 0 draws each message's
    /// jitter afresh, 0.9 makes a slow drift. Unlike netem's `delay ... correlation`, which
    /// mixes the new draw with the last value and so narrows the distribution, the correlation
    /// is applied to the jitter's underlying normal (an AR(1) process), so the median and p99
    /// stay those given whatever the correlation.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub correlation: f64,
}

fn is_zero(v: &f64) -> bool {
    *v == 0.0
}

/// Gilbert-Elliott loss on each transmission attempt, with link-layer retransmission.
///
/// The channel is in a good or a bad state; after every attempt it moves from good to bad with
/// probability `p` and from bad to good with probability `r` (so bad spells last `1/r` attempts
/// on average: bursts). An attempt is lost with probability `loss_good` or `loss_bad` depending
/// on the state. A lost attempt is retried after `retransmit_ms` (HARQ / RLC), up to
/// `max_retransmissions` times; then the message is lost for good.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossProfile {
    /// Probability of moving from the good to the bad state after an attempt.
    #[serde(default)]
    pub p: f64,
    /// Probability of moving from the bad to the good state after an attempt.
    #[serde(default = "one")]
    pub r: f64,
    /// Probability that an attempt is lost in the good state.
    #[serde(default)]
    pub loss_good: f64,
    /// Probability that an attempt is lost in the bad state.
    #[serde(default)]
    pub loss_bad: f64,
    /// Delay added by each retransmission.
    #[serde(default)]
    pub retransmit_ms: f64,
    /// Retransmissions after the first attempt before the message is given up.
    #[serde(default)]
    pub max_retransmissions: u32,
}

fn one() -> f64 {
    1.0
}

impl Default for LossProfile {
    fn default() -> Self {
        LossProfile {
            p: 0.0,
            r: 1.0,
            loss_good: 0.0,
            loss_bad: 0.0,
            retransmit_ms: 0.0,
            max_retransmissions: 0,
        }
    }
}

/// Handover interruptions: a Poisson process of outages with log-normal durations.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HandoverProfile {
    /// Mean time between the starts of two handovers.
    pub mean_interval_s: f64,
    /// Median interruption.
    pub duration_median_ms: f64,
    /// 99th percentile interruption; at least `duration_median_ms`.
    pub duration_p99_ms: f64,
    /// What becomes of a message whose arrival falls inside an interruption (it was already on
    /// its way when the radio went): it waits for the end (`wait`, the default: 3GPP lossless
    /// handover forwards it) or is lost (`lose`).
    #[serde(default, skip_serializing_if = "InFlight::is_default")]
    pub in_flight: InFlight,
}

/// The fate of a message in flight when a handover starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum InFlight {
    /// Delivered when the interruption ends.
    #[default]
    Wait,
    /// Lost.
    Lose,
}

impl InFlight {
    fn is_default(&self) -> bool {
        *self == InFlight::Wait
    }
}

/// Why a profile could not be read or is not usable.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The file could not be read.
    #[error("cannot read link profile {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What the system said.
        source: std::io::Error,
    },
    /// A profile file, a document or a trace file is longer than its limit.
    #[error("{what} {path} is larger than the limit of {limit} bytes")]
    TooLarge {
        /// What it is: `link profile`, `link profile document` or `link trace`.
        what: &'static str,
        /// The file (`-` for a document).
        path: PathBuf,
        /// The limit.
        limit: u64,
    },
    /// The TOML document does not parse or has unknown or mistyped fields.
    #[error("invalid link profile (TOML): {0}")]
    Toml(#[from] toml::de::Error),
    /// The JSON document does not parse or has unknown or mistyped fields.
    #[error("invalid link profile (JSON): {0}")]
    Json(#[from] serde_json::Error),
    /// A field has a value the simulator cannot use.
    #[error("invalid link profile: `{field}` {reason}")]
    Invalid {
        /// Dotted path of the field, for example `uplink.loss.p`.
        field: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A trace file is missing or not in Mahimahi's format.
    #[error("invalid link profile: trace {path}: {reason}")]
    Trace {
        /// The trace file.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// Neither a built-in name nor a readable file.
    #[error("unknown link profile `{name}`: not a file, and the built-ins are {known}")]
    Unknown {
        /// What was asked for.
        name: String,
        /// The built-in names, comma separated.
        known: String,
    },
}

// === impl LinkProfile ===

impl LinkProfile {
    /// A built-in profile by name (`ideal`, `urllc`, `embb-mmwave`, `embb-midband`, `lte`,
    /// `cell-edge`, `offline`).
    pub fn builtin(name: &str) -> Option<LinkProfile> {
        crate::builtin::builtins()
            .into_iter()
            .find(|b| b.profile.name == name)
            .map(|b| b.profile)
    }

    /// A built-in name, or else the path of a TOML or JSON profile file: what a
    /// `--link-profile` flag accepts.
    pub fn resolve(spec: &str) -> Result<LinkProfile, ProfileError> {
        if let Some(profile) = LinkProfile::builtin(spec) {
            return Ok(profile);
        }
        let path = Path::new(spec);
        if path.is_file() {
            return LinkProfile::load(path);
        }
        Err(ProfileError::Unknown {
            name: spec.to_owned(),
            known: crate::builtin::NAMES.join(", "),
        })
    }

    /// Reads a profile file the operator named: JSON when the name ends in `.json`, TOML
    /// otherwise; at most [`MAX_PROFILE_BYTES`]. Trace paths may be any path; relative ones are
    /// made relative to the file's directory.
    pub fn load(path: impl AsRef<Path>) -> Result<LinkProfile, ProfileError> {
        let path = path.as_ref();
        let text = files::read_bounded(path, MAX_PROFILE_BYTES).map_err(|e| match e {
            ReadError::Io(source) => ProfileError::Io {
                path: path.to_owned(),
                source,
            },
            ReadError::TooLarge => ProfileError::TooLarge {
                what: "link profile",
                path: path.to_owned(),
                limit: MAX_PROFILE_BYTES,
            },
        })?;
        let mut profile: LinkProfile = if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            serde_json::from_str(&text)?
        } else {
            toml::from_str(&text)?
        };
        let base = path.parent().unwrap_or(Path::new(""));
        for dir in [&mut profile.uplink, &mut profile.downlink] {
            if let Some(trace) = &mut dir.trace {
                if trace.is_relative() {
                    *trace = base.join(&*trace);
                }
            }
        }
        profile.validate()?;
        Ok(profile)
    }

    /// Parses a TOML document and validates it. Like every document, it may carry its traces
    /// inline but name no trace file (see [`LinkProfile::from_document_in`]).
    pub fn from_toml_str(text: &str) -> Result<LinkProfile, ProfileError> {
        LinkProfile::confine(toml::from_str(bounded(text)?)?, &TraceSource::None)
    }

    /// Parses a JSON document and validates it; traces as for [`LinkProfile::from_toml_str`].
    pub fn from_json_str(text: &str) -> Result<LinkProfile, ProfileError> {
        LinkProfile::confine(serde_json::from_str(bounded(text)?)?, &TraceSource::None)
    }

    /// Parses a document that is JSON when it starts with `{`, TOML otherwise, naming no trace
    /// file: [`LinkProfile::from_document_in`] with [`TraceSource::None`].
    pub fn from_document(text: &str) -> Result<LinkProfile, ProfileError> {
        LinkProfile::from_document_in(text, &TraceSource::None)
    }

    /// Parses a document received over the network (what `SetLinkProfile`'s `document`
    /// carries): JSON when it starts with `{`, TOML otherwise, at most [`MAX_PROFILE_BYTES`].
    /// A `trace` may only be a bare file name inside `traces`' directory; inline traces
    /// (`trace_ms`) are always accepted. Errors name the field and never quote a file.
    pub fn from_document_in(text: &str, traces: &TraceSource) -> Result<LinkProfile, ProfileError> {
        let text = bounded(text)?;
        let profile: LinkProfile = if text.trim_start().starts_with('{') {
            serde_json::from_str(text)?
        } else {
            toml::from_str(text)?
        };
        LinkProfile::confine(profile, traces)
    }

    /// Replaces each trace name by the file it names in `traces`, or fails; then validates.
    fn confine(
        mut profile: LinkProfile,
        traces: &TraceSource,
    ) -> Result<LinkProfile, ProfileError> {
        for (name, dir) in [
            ("uplink", &mut profile.uplink),
            ("downlink", &mut profile.downlink),
        ] {
            if let Some(trace) = &mut dir.trace {
                *trace = traces.resolve(&format!("{name}.trace"), trace)?;
            }
        }
        profile.validate()?;
        Ok(profile)
    }

    /// The profile as a JSON document (the format [`LinkProfile::from_json_str`] reads).
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a profile always serializes")
    }

    /// The profile as a TOML document (the format [`LinkProfile::from_toml_str`] reads).
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).expect("a profile always serializes")
    }

    /// Checks every value is one the simulator can use, and that trace files load.
    pub fn validate(&self) -> Result<(), ProfileError> {
        self.uplink.validate("uplink")?;
        self.downlink.validate("downlink")?;
        if let Some(h) = &self.handover {
            within(
                "handover.mean_interval_s",
                h.mean_interval_s,
                0.01,
                MAX_MS / 1e3,
            )?;
            time_ms("handover.duration_median_ms", h.duration_median_ms)?;
            time_ms("handover.duration_p99_ms", h.duration_p99_ms)?;
            at_least(
                "handover.duration_p99_ms",
                h.duration_p99_ms,
                "handover.duration_median_ms",
                h.duration_median_ms,
            )?;
        }
        Ok(())
    }

    /// True when neither direction can carry anything: every message is lost.
    pub fn is_offline(&self) -> bool {
        self.uplink.bandwidth_mbps == Some(0.0) && self.downlink.bandwidth_mbps == Some(0.0)
    }

    /// A direction by name.
    pub fn direction(&self, dir: crate::Direction) -> &DirectionProfile {
        match dir {
            crate::Direction::Uplink => &self.uplink,
            crate::Direction::Downlink => &self.downlink,
        }
    }
}

// === impl DirectionProfile ===

impl DirectionProfile {
    /// No serialization time, no delay, no loss.
    pub fn unlimited() -> Self {
        DirectionProfile::default()
    }

    /// A fixed bandwidth and nothing else.
    pub fn with_bandwidth(mbps: f64) -> Self {
        DirectionProfile {
            bandwidth_mbps: Some(mbps),
            ..DirectionProfile::default()
        }
    }

    fn validate(&self, dir: &str) -> Result<(), ProfileError> {
        if let Some(bw) = self.bandwidth_mbps {
            let field = format!("{dir}.bandwidth_mbps");
            if bw != 0.0 {
                within(&field, bw, 0.001, 1e7)?;
            }
        }
        let capacities = [
            self.bandwidth_mbps.is_some(),
            self.trace.is_some(),
            self.trace_ms.is_some(),
        ];
        if capacities.iter().filter(|&&c| c).count() > 1 {
            let field = if self.trace.is_some() {
                "trace"
            } else {
                "trace_ms"
            };
            return Err(invalid(
                &format!("{dir}.{field}"),
                "give one of bandwidth_mbps, trace and trace_ms (a trace is the capacity)",
            ));
        }
        if let Some(path) = &self.trace {
            Trace::load(path)?;
        }
        if let Some(ms) = &self.trace_ms {
            Trace::from_ms(ms.clone())
                .map_err(|reason| invalid(&format!("{dir}.trace_ms"), reason))?;
        }
        let d = &self.delay;
        time_ms(&format!("{dir}.delay.base_ms"), d.base_ms)?;
        time_ms(&format!("{dir}.delay.jitter_median_ms"), d.jitter_median_ms)?;
        time_ms(&format!("{dir}.delay.jitter_p99_ms"), d.jitter_p99_ms)?;
        let field = format!("{dir}.delay.correlation");
        if !(0.0..1.0).contains(&d.correlation) {
            return Err(invalid(
                &field,
                format!("must be in [0, 1), got {}", d.correlation),
            ));
        }
        if d.jitter_median_ms > 0.0 {
            at_least(
                &format!("{dir}.delay.jitter_p99_ms"),
                d.jitter_p99_ms,
                &format!("{dir}.delay.jitter_median_ms"),
                d.jitter_median_ms,
            )?;
        }
        let l = &self.loss;
        for (name, v) in [
            ("p", l.p),
            ("r", l.r),
            ("loss_good", l.loss_good),
            ("loss_bad", l.loss_bad),
        ] {
            probability(&format!("{dir}.loss.{name}"), v)?;
        }
        if l.p > 0.0 && l.r == 0.0 {
            return Err(invalid(
                &format!("{dir}.loss.r"),
                "is 0 while p > 0: the channel would stay in the bad state for ever",
            ));
        }
        time_ms(&format!("{dir}.loss.retransmit_ms"), l.retransmit_ms)?;
        if l.max_retransmissions > MAX_RETRANSMISSIONS {
            return Err(invalid(
                &format!("{dir}.loss.max_retransmissions"),
                format!(
                    "must be at most {MAX_RETRANSMISSIONS}, got {}",
                    l.max_retransmissions
                ),
            ));
        }
        Ok(())
    }
}

fn invalid(field: &str, reason: impl Into<String>) -> ProfileError {
    ProfileError::Invalid {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

/// A document's text, refused past [`MAX_PROFILE_BYTES`].
fn bounded(text: &str) -> Result<&str, ProfileError> {
    if text.len() as u64 > MAX_PROFILE_BYTES {
        return Err(ProfileError::TooLarge {
            what: "link profile document",
            path: PathBuf::from("-"),
            limit: MAX_PROFILE_BYTES,
        });
    }
    Ok(text)
}

/// A time in milliseconds: from 0 to [`MAX_MS`].
fn time_ms(field: &str, v: f64) -> Result<(), ProfileError> {
    within(field, v, 0.0, MAX_MS)
}

fn within(field: &str, v: f64, min: f64, max: f64) -> Result<(), ProfileError> {
    if (min..=max).contains(&v) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be a number from {min} to {max}, got {v}"),
        ))
    }
}

fn probability(field: &str, v: f64) -> Result<(), ProfileError> {
    if (0.0..=1.0).contains(&v) {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("must be a probability in [0, 1], got {v}"),
        ))
    }
}

fn at_least(field: &str, v: f64, other: &str, min: f64) -> Result<(), ProfileError> {
    if v >= min {
        Ok(())
    } else {
        Err(invalid(
            field,
            format!("({v}) must be at least `{other}` ({min})"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip() {
        for b in crate::builtin::builtins() {
            let text = b.profile.to_toml();
            let back = LinkProfile::from_toml_str(&text).unwrap();
            assert_eq!(back, b.profile, "{text}");
            let back = LinkProfile::from_json_str(&b.profile.to_json()).unwrap();
            assert_eq!(back, b.profile);
        }
    }

    #[test]
    fn minimal_document_defaults() {
        let p = LinkProfile::from_toml_str(
            "[uplink]\nbandwidth_mbps = 10\n[downlink]\ndelay = { base_ms = 5 }\n",
        )
        .unwrap();
        assert_eq!(p.name, "custom");
        assert_eq!(p.uplink.bandwidth_mbps, Some(10.0));
        assert_eq!(p.downlink.bandwidth_mbps, None);
        assert_eq!(p.downlink.delay.base_ms, 5.0);
        assert_eq!(p.uplink.loss, LossProfile::default());
        assert!(p.handover.is_none());
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let err =
            LinkProfile::from_toml_str("[uplink]\n[uplink.delay]\njiter_p99_ms = 3\n[downlink]\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("jiter_p99_ms"), "{err}");
        let err = LinkProfile::from_json_str(r#"{"uplink": {}, "downlink": {}, "colour": 1}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("colour"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = LinkProfile::from_toml_str("[uplink]\nloss = { p = 1.5 }\n[downlink]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("uplink.loss.p"), "{err}");
        let err = LinkProfile::from_toml_str(
            "[uplink]\n[downlink]\ndelay = { jitter_median_ms = 5, jitter_p99_ms = 1 }\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("downlink.delay.jitter_p99_ms"), "{err}");
        let err =
            LinkProfile::from_toml_str("[uplink]\nbandwidth_mbps = 1\ntrace = \"x\"\n[downlink]\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("uplink.trace"), "{err}");
    }

    #[test]
    fn resolve_names_the_builtins() {
        assert_eq!(LinkProfile::resolve("lte").unwrap().name, "lte");
        let err = LinkProfile::resolve("5g-ultra").unwrap_err().to_string();
        assert!(err.contains("embb-midband"), "{err}");
    }

    /// What issue 11 lists: nothing a document names outside the trace directory is opened,
    /// and no error quotes a file.
    #[test]
    fn documents_name_traces_only_inside_the_trace_directory() {
        let root = tempfile::tempdir().unwrap();
        let traces = root.path().join("traces");
        std::fs::create_dir(&traces).unwrap();
        std::fs::write(traces.join("t.up"), "1\n2\n").unwrap();
        std::fs::write(root.path().join("secret"), "top-secret-line\n").unwrap();
        let source = TraceSource::dir(&traces).unwrap();
        let doc =
            |trace: &str| format!(r#"{{"uplink": {{"trace": {trace:?}}}, "downlink": {{}}}}"#);

        let p = LinkProfile::from_document_in(&doc("t.up"), &source).unwrap();
        assert_eq!(
            p.uplink.trace.as_deref(),
            Some(
                std::fs::canonicalize(traces.join("t.up"))
                    .unwrap()
                    .as_path()
            )
        );
        let inside = traces.join("t.up");
        for name in [
            "/etc/passwd",
            "../secret",
            inside.to_str().unwrap(),
            "/dev/zero",
            "sub/t.up",
        ] {
            for src in [&source, &TraceSource::None] {
                let err = LinkProfile::from_document_in(&doc(name), src)
                    .unwrap_err()
                    .to_string();
                assert!(err.contains("`uplink.trace`"), "{name}: {err}");
                assert!(
                    !err.contains("root:") && !err.contains("top-secret"),
                    "{err}"
                );
            }
        }
        // The TOML form and the one-argument API are held to the same rule.
        let err = LinkProfile::from_document("[uplink]\ntrace = \"/etc/passwd\"\n[downlink]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("`uplink.trace`"), "{err}");
        assert!(LinkProfile::from_json_str(&doc("t.up")).is_err());
        // Inline traces need no directory.
        let p =
            LinkProfile::from_document(r#"{"uplink": {"trace_ms": [1, 1, 2]}, "downlink": {}}"#)
                .unwrap();
        assert_eq!(p.uplink.trace_ms, Some(vec![1, 1, 2]));
        let err = LinkProfile::from_document(r#"{"uplink": {"trace_ms": [2, 1]}, "downlink": {}}"#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`uplink.trace_ms`") && err.contains("entry 2"),
            "{err}"
        );
    }

    #[test]
    fn reads_are_bounded() {
        let big = " ".repeat(MAX_PROFILE_BYTES as usize + 1);
        let err = LinkProfile::from_document(&big).unwrap_err().to_string();
        assert!(err.contains(&MAX_PROFILE_BYTES.to_string()), "{err}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big.toml");
        std::fs::write(&file, &big).unwrap();
        let err = LinkProfile::load(&file).unwrap_err().to_string();
        assert!(err.contains("big.toml") && err.contains("limit"), "{err}");
        let err = LinkProfile::load("/dev/zero").unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");

        let trace = dir.path().join("big.up");
        let line = "1\n".repeat((crate::files::MAX_TRACE_BYTES / 2) as usize + 1);
        std::fs::write(&trace, line).unwrap();
        let err = Trace::load(&trace).unwrap_err().to_string();
        assert!(err.contains("big.up") && err.contains("limit"), "{err}");
        let err = Trace::load(Path::new("/dev/zero")).unwrap_err().to_string();
        assert!(err.contains("not a regular file"), "{err}");
    }

    /// Values that would make the simulator loop for ever or overflow are refused.
    #[test]
    fn out_of_range_values_are_refused() {
        for (doc, field) in [
            (
                "[uplink]\nloss = { loss_good = 1, max_retransmissions = 4000000000 }\n[downlink]\n",
                "uplink.loss.max_retransmissions",
            ),
            (
                "[uplink]\n[downlink]\n[handover]\nmean_interval_s = 1e-300\nduration_median_ms = 0\nduration_p99_ms = 0\n",
                "handover.mean_interval_s",
            ),
            (
                "[uplink]\nbandwidth_mbps = 1e-300\n[downlink]\n",
                "uplink.bandwidth_mbps",
            ),
            (
                "[uplink]\ndelay = { base_ms = 1e300 }\n[downlink]\n",
                "uplink.delay.base_ms",
            ),
            (
                "[uplink]\n[downlink]\ndelay = { correlation = 1 }\n",
                "downlink.delay.correlation",
            ),
        ] {
            let err = LinkProfile::from_toml_str(doc).unwrap_err().to_string();
            assert!(err.contains(&format!("`{field}`")), "{doc}: {err}");
        }
    }

    #[test]
    fn load_resolves_trace_relative_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("t.up"), "1\n2\n").unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "[uplink]\ntrace = \"t.up\"\n[downlink]\n").unwrap();
        let p = LinkProfile::load(&file).unwrap();
        assert_eq!(
            p.uplink.trace.as_deref(),
            Some(dir.path().join("t.up").as_path())
        );
    }
}

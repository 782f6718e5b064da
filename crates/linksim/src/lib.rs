//! A simulated 5G / LTE link between the edge and the cloud: per-direction FIFO serialization at
//! a bandwidth, heavy-tailed one-way delay, Gilbert-Elliott bursty loss with link-layer
//! retransmission, handover interruptions and Mahimahi trace replay; deterministic for a seed,
//! on tokio time, and usable as a tower layer on a gRPC client channel.
//!
//! # Layout
//!
//! - [`profile`]: [`LinkProfile`], the parameters as data, read from TOML or JSON and validated.
//! - [`builtin`]: the built-in profiles (`ideal`, `urllc`, `embb-mmwave`, `embb-midband`, `lte`,
//!   `cell-edge`, `offline`), the figures they target and how they were calibrated.
//! - [`sim`]: [`Simulator`], the pure core in simulated time: what happens to one message.
//! - `delay`, `loss`, `handover`, [`trace`]: the random processes and the trace replay it uses.
//! - [`link`]: [`Link`], the simulator on tokio time, shared by concurrent senders, with live
//!   [`LinkStats`]; [`timer`]: how it waits (tokio's timer, or a precise timerfd thread).
//! - [`files`]: bounded reads, and where a profile document may name trace files.
//! - [`layer`]: [`LinkLayer`], the link as tower middleware on a tonic client channel.
//! - [`sample`](mod@sample): what `edgeinfer link sample` reports, simulated at once.
//! - [`live`]: a gRPC echo on loopback through the layer, against `sample`: what
//!   `edgeinfer link live` reports.
//! - [`proxy`]: any TCP stream behind a link, both directions: `edgeinfer link proxy`.
//!
//! # Decisions
//!
//! - **Loss means what a caller sees**: a profile's loss target is the fraction of
//!   request/response exchanges that get no answer, after link-layer retransmissions; each
//!   direction carries half of it (`builtin::per_direction_loss`). `link sample` reports it as
//!   `lost / messages`.
//! - **Loss is per message**: a message is one unit for the Gilbert-Elliott channel (its state
//!   advancing per attempt); a retransmission costs its delay, not a new serialization, and does
//!   not hold up the queue (HARQ runs parallel processes).
//! - **Handovers delay, they do not lose**: nothing starts or continues serializing during one;
//!   data waits for the target cell (3GPP lossless handover). They are a link-wide schedule,
//!   since the radio of both directions moves together.
//! - **Delay is drawn per message**, so two messages may arrive out of order, as independent RPCs
//!   may.
//! - **Time**: the simulator decides a message's fate when it is sent and [`Link::transmit`]
//!   waits until then. By default it waits with tokio's timer, whose 1 ms ticks make a live
//!   link up to 1 ms later than the simulated time it reports (what [`Transit`] carries); a
//!   live link made [`LinkTimer::Precise`] wakes within tens of microseconds ([`timer`]).
//!
//! Invariant: this crate knows nothing of models, MNIST or the edgeinfer API; it sees messages
//! only as sizes in bytes. Only the precise timer reads the wall clock; everything else uses
//! tokio time (so tests run on the paused clock) or simulated time.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod builtin;
mod delay;
pub mod files;
mod handover;
pub mod layer;
pub mod link;
pub mod live;
mod loss;
pub mod profile;
pub mod proxy;
pub mod sample;
pub mod sim;
pub mod timer;
pub mod trace;

pub use builtin::{Builtin, Targets, builtins};
pub use files::TraceSource;
pub use layer::{LinkLayer, LinkService, Transit};
pub use link::{DirectionStats, Link, LinkStats, Lost, Sent};
pub use loss::message_loss_rate;
pub use profile::{
    DelayProfile, DirectionProfile, HandoverProfile, InFlight, LinkProfile, LossProfile,
    ProfileError,
};
pub use sample::{SampleReport, sample};
pub use sim::{Delivery, Direction, Outcome, Simulator};
pub use timer::LinkTimer;
pub use trace::Trace;

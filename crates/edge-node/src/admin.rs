//! The `EdgeAdmin` service: the edge's status, switching the link profile, changing the policy.

use std::sync::Arc;

use edgeinfer::v1::edge_admin_server::EdgeAdmin;
use edgeinfer::v1::set_link_profile_request::Profile;
use edgeinfer::v1::{
    EdgeStatus, Estimates, GetStatusRequest, LinkStats, Policy, SetLinkProfileRequest,
    SetLinkProfileResponse, SetPolicyRequest,
};
use edgeinfer_linksim::{LinkProfile, TraceSource};
use edgeinfer_serving::node::model_info;
use tonic::{Request, Response, Status};

use crate::node::EdgeNode;

/// The admin service of an edge node.
pub struct AdminService {
    node: Arc<EdgeNode>,
    /// Where the trace files that profile documents name may be: documents come over the
    /// network, so they never name a path of their own choosing.
    traces: TraceSource,
}

impl AdminService {
    /// Administers `node`; profile documents may name trace files only in `traces`.
    pub fn new(node: Arc<EdgeNode>, traces: TraceSource) -> Self {
        Self { node, traces }
    }
}

/// The status of `node`, as `GetStatus` reports it.
pub fn status(node: &EdgeNode) -> EdgeStatus {
    let router = &node.router;
    let link = node.link.stats();
    let est = router.estimates.snapshot();
    let served = router.model.current();
    let ms = |s: f64| s * 1e3;
    EdgeStatus {
        link_profile: link.profile.clone(),
        link: Some(LinkStats {
            delivered: link.delivered,
            lost: link.lost,
            uplink_queued_bytes: link.uplink_queued_bytes,
            downlink_queued_bytes: link.downlink_queued_bytes,
            recent_delay_p50_ms: link.recent_delay_p50.as_secs_f64() * 1e3,
            recent_delay_p99_ms: link.recent_delay_p99.as_secs_f64() * 1e3,
        }),
        estimates: Some(Estimates {
            srtt_ms: ms(est.srtt.unwrap_or(0.0)),
            rttvar_ms: ms(est.rttvar),
            rtt_p50_ms: ms(est.rtt_p50.unwrap_or(0.0)),
            fallback_reserve_ms: ms(router.reserve.get().as_secs_f64()),
            uplink_mbps: est.uplink_bps.unwrap_or(0.0) / 1e6,
            downlink_mbps: est.downlink_bps.unwrap_or(0.0) / 1e6,
            cloud_ms: ms(est.cloud),
            edge_compute_ms: served.batcher.batch_compute().as_secs_f64() * 1e3,
            edge_queue_ms: served.batcher.expected_completion().as_secs_f64() * 1e3,
        }),
        circuit: router.circuit.state() as i32,
        policy: Some(router.policy().into()),
        requests_by_reason: router
            .counters
            .reasons()
            .map(|(r, n)| (r.name().to_string(), n))
            .collect(),
        requests_by_tier: router
            .counters
            .tiers()
            .map(|(t, n)| (t.name().to_string(), n))
            .collect(),
        edge_model: Some(model_info(&served.meta)),
        cloud_address: router
            .cloud
            .as_ref()
            .map_or_else(String::new, |u| u.address().to_string()),
        uptime_s: node.started.elapsed().as_secs_f64(),
    }
}

#[tonic::async_trait]
impl EdgeAdmin for AdminService {
    async fn get_status(
        &self,
        _request: Request<GetStatusRequest>,
    ) -> Result<Response<EdgeStatus>, Status> {
        Ok(Response::new(status(&self.node)))
    }

    async fn set_link_profile(
        &self,
        request: Request<SetLinkProfileRequest>,
    ) -> Result<Response<SetLinkProfileResponse>, Status> {
        let r = request.into_inner();
        let profile = match r.profile {
            None => {
                return Err(Status::invalid_argument(
                    "profile: set `name` (a built-in profile) or `document` (TOML or JSON)",
                ));
            }
            Some(Profile::Name(name)) => LinkProfile::builtin(&name).ok_or_else(|| {
                Status::invalid_argument(format!(
                    "name: {name:?} is not a built-in profile; use one of {}",
                    edgeinfer_linksim::builtin::NAMES.join(", ")
                ))
            })?,
            Some(Profile::Document(doc)) => LinkProfile::from_document_in(&doc, &self.traces)
                .map_err(|e| Status::invalid_argument(format!("document: {e}")))?,
        };
        let seed = (r.seed != 0).then_some(r.seed);
        tracing::info!(profile = %profile.name, ?seed, "link profile switched");
        // What was learned about the old link says nothing about a different one; the same
        // link with a new seed behaves alike, and keeps what the edge learned of it.
        if self.node.link.profile() != profile {
            self.node.router.estimates.reset();
        }
        self.node.link.set_profile(profile.clone(), seed);
        Ok(Response::new(SetLinkProfileResponse {
            link_profile: profile.name.clone(),
            document: profile.to_json(),
        }))
    }

    async fn set_policy(
        &self,
        request: Request<SetPolicyRequest>,
    ) -> Result<Response<Policy>, Status> {
        let change = request.into_inner();
        // Read, check and replace under one lock, so that two changes at once both apply.
        let mut guard = self
            .node
            .router
            .policy
            .write()
            .unwrap_or_else(|e| e.into_inner());
        let next = guard.updated(&change).map_err(Status::invalid_argument)?;
        *guard = next;
        drop(guard);
        tracing::info!(
            threshold = next.threshold,
            budget_ms = next.default_budget.as_millis() as u64,
            metric = ?next.metric,
            "policy changed"
        );
        Ok(Response::new(next.into()))
    }
}

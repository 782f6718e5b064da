//! The Open Inference Protocol's model configuration and statistics calls (Triton's
//! extensions), over a node's model in service. Read-only, so on the data port as Triton
//! serves them; loading is on the admin listener (`model_admin`).

use std::sync::atomic::Ordering;

use edgeinfer::inference::{
    DataType, InferStatistics, ModelConfig, ModelConfigRequest, ModelConfigResponse, ModelInput,
    ModelOutput, ModelStatistics, ModelStatisticsRequest, ModelStatisticsResponse,
    StatisticDuration,
};
use tonic::Status;

use crate::node::Node;
use crate::oip::{INPUT_NAME, OUTPUT_NAME, resolve_version};

/// The served version, when `name` and `version` (empty: any) name it.
fn served_for<N: Node + ?Sized>(
    node: &N,
    name: &str,
    version: &str,
) -> Result<std::sync::Arc<crate::models::Served>, Status> {
    resolve_version(node, name, version).map_err(Status::from)?;
    node.served()
        .ok_or_else(|| Status::unimplemented("this node keeps no model statistics"))
}

/// `ModelConfig`: the model's inputs, outputs and batch limit.
pub fn model_config<N: Node + ?Sized>(
    node: &N,
    r: &ModelConfigRequest,
) -> Result<ModelConfigResponse, Status> {
    let served = served_for(node, &r.name, &r.version)?;
    let resolved = node.resolve(&r.name).map_err(Status::from)?;
    let meta = &served.meta;
    Ok(ModelConfigResponse {
        config: Some(ModelConfig {
            name: resolved.name().to_string(),
            platform: "edgeinfer-candle".into(),
            max_batch_size: i32::try_from(served.max_batch).unwrap_or(i32::MAX),
            input: vec![ModelInput {
                name: INPUT_NAME.into(),
                data_type: DataType::TypeFp32 as i32,
                dims: vec![meta.input_len() as i64],
            }],
            output: vec![ModelOutput {
                name: OUTPUT_NAME.into(),
                data_type: DataType::TypeFp32 as i32,
                dims: vec![meta.labels.len() as i64],
            }],
        }),
    })
}

/// `ModelStatistics`: what the version in service did since it was loaded.
pub fn model_statistics<N: Node + ?Sized>(
    node: &N,
    r: &ModelStatisticsRequest,
) -> Result<ModelStatisticsResponse, Status> {
    let served = served_for(node, &r.name, &r.version)?;
    // The concrete model's name: on the edge the task's answers may come from the cloud,
    // but these are the edge model's own inferences.
    let name = served.meta.name.clone();
    let s = &served.stats;
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    let success = load(&s.success);
    Ok(ModelStatisticsResponse {
        model_stats: vec![ModelStatistics {
            name,
            version: served.meta.version.clone(),
            last_inference: load(&s.last_ms),
            inference_count: success,
            inference_stats: Some(InferStatistics {
                success: Some(StatisticDuration {
                    count: success,
                    ns: load(&s.success_ns),
                }),
                fail: Some(StatisticDuration {
                    count: load(&s.fail),
                    ns: 0,
                }),
                queue: Some(StatisticDuration {
                    count: success,
                    ns: load(&s.queue_ns),
                }),
                compute_infer: Some(StatisticDuration {
                    count: success,
                    ns: load(&s.compute_ns),
                }),
            }),
        }],
    })
}

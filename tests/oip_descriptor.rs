//! The Open Inference Protocol messages must keep the public field numbers and types, or
//! tritonclient and KServe clients silently misread them. This decodes the descriptor set that
//! reflection serves and checks it against the published definition.

use edgeinfer::FILE_DESCRIPTOR_SET;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};

/// (field name, number, type, repeated?, type name for messages and maps)
type Expected = (&'static str, i32, Type, bool, Option<&'static str>);

fn find<'a>(set: &'a FileDescriptorSet, package: &str, path: &[&str]) -> &'a DescriptorProto {
    let file = set
        .file
        .iter()
        .find(|f| f.package() == package)
        .unwrap_or_else(|| panic!("no file with package {package}"));
    let mut msg = file
        .message_type
        .iter()
        .find(|m| m.name() == path[0])
        .unwrap_or_else(|| panic!("no message {}", path[0]));
    for name in &path[1..] {
        msg = msg
            .nested_type
            .iter()
            .find(|m| m.name() == *name)
            .unwrap_or_else(|| panic!("no nested message {name}"));
    }
    msg
}

fn check(path: &[&str], expected: &[Expected]) {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).expect("descriptor set decodes");
    let msg = find(&set, "inference", path);
    let label = path.join(".");
    assert_eq!(
        msg.field.len(),
        expected.len(),
        "{label}: field count differs from the public definition"
    );
    for &(name, number, ty, repeated, type_name) in expected {
        let field = msg
            .field
            .iter()
            .find(|f| f.name() == name)
            .unwrap_or_else(|| panic!("{label}: no field {name}"));
        assert_eq!(field.number(), number, "{label}.{name}: number");
        assert_eq!(field.r#type(), ty, "{label}.{name}: type");
        assert_eq!(
            field.label() == Label::Repeated,
            repeated,
            "{label}.{name}: repeated"
        );
        if let Some(tn) = type_name {
            assert_eq!(field.type_name(), tn, "{label}.{name}: type name");
        }
    }
}

const PARAMS_REQ_IN: &str = ".inference.ModelInferRequest.InferInputTensor.ParametersEntry";

#[test]
fn model_infer_request_matches_public_definition() {
    check(
        &["ModelInferRequest"],
        &[
            ("model_name", 1, Type::String, false, None),
            ("model_version", 2, Type::String, false, None),
            ("id", 3, Type::String, false, None),
            (
                "parameters",
                4,
                Type::Message,
                true,
                Some(".inference.ModelInferRequest.ParametersEntry"),
            ),
            (
                "inputs",
                5,
                Type::Message,
                true,
                Some(".inference.ModelInferRequest.InferInputTensor"),
            ),
            (
                "outputs",
                6,
                Type::Message,
                true,
                Some(".inference.ModelInferRequest.InferRequestedOutputTensor"),
            ),
            ("raw_input_contents", 7, Type::Bytes, true, None),
        ],
    );
    check(
        &["ModelInferRequest", "InferInputTensor"],
        &[
            ("name", 1, Type::String, false, None),
            ("datatype", 2, Type::String, false, None),
            ("shape", 3, Type::Int64, true, None),
            ("parameters", 4, Type::Message, true, Some(PARAMS_REQ_IN)),
            (
                "contents",
                5,
                Type::Message,
                false,
                Some(".inference.InferTensorContents"),
            ),
        ],
    );
    check(
        &["ModelInferRequest", "InferRequestedOutputTensor"],
        &[
            ("name", 1, Type::String, false, None),
            ("parameters", 2, Type::Message, true, None),
        ],
    );
}

#[test]
fn model_infer_response_matches_public_definition() {
    check(
        &["ModelInferResponse"],
        &[
            ("model_name", 1, Type::String, false, None),
            ("model_version", 2, Type::String, false, None),
            ("id", 3, Type::String, false, None),
            ("parameters", 4, Type::Message, true, None),
            (
                "outputs",
                5,
                Type::Message,
                true,
                Some(".inference.ModelInferResponse.InferOutputTensor"),
            ),
            ("raw_output_contents", 6, Type::Bytes, true, None),
        ],
    );
    check(
        &["ModelInferResponse", "InferOutputTensor"],
        &[
            ("name", 1, Type::String, false, None),
            ("datatype", 2, Type::String, false, None),
            ("shape", 3, Type::Int64, true, None),
            ("parameters", 4, Type::Message, true, None),
            (
                "contents",
                5,
                Type::Message,
                false,
                Some(".inference.InferTensorContents"),
            ),
        ],
    );
}

#[test]
fn infer_parameter_matches_public_definition() {
    check(
        &["InferParameter"],
        &[
            ("bool_param", 1, Type::Bool, false, None),
            ("int64_param", 2, Type::Int64, false, None),
            ("string_param", 3, Type::String, false, None),
            ("double_param", 4, Type::Double, false, None),
            ("uint64_param", 5, Type::Uint64, false, None),
        ],
    );
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let msg = find(&set, "inference", &["InferParameter"]);
    assert_eq!(msg.oneof_decl.len(), 1);
    assert_eq!(msg.oneof_decl[0].name(), "parameter_choice");
    assert!(msg.field.iter().all(|f| f.oneof_index == Some(0)));
}

#[test]
fn infer_tensor_contents_matches_public_definition() {
    check(
        &["InferTensorContents"],
        &[
            ("bool_contents", 1, Type::Bool, true, None),
            ("int_contents", 2, Type::Int32, true, None),
            ("int64_contents", 3, Type::Int64, true, None),
            ("uint_contents", 4, Type::Uint32, true, None),
            ("uint64_contents", 5, Type::Uint64, true, None),
            ("fp32_contents", 6, Type::Float, true, None),
            ("fp64_contents", 7, Type::Double, true, None),
            ("bytes_contents", 8, Type::Bytes, true, None),
        ],
    );
}

#[test]
fn service_has_the_eight_rpcs() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let file = set
        .file
        .iter()
        .find(|f| f.package() == "inference")
        .unwrap();
    let svc = &file.service[0];
    assert_eq!(svc.name(), "GRPCInferenceService");
    let mut methods: Vec<_> = svc.method.iter().map(|m| m.name()).collect();
    methods.sort_unstable();
    assert_eq!(
        methods,
        [
            "ModelConfig",
            "ModelInfer",
            "ModelMetadata",
            "ModelReady",
            "ModelStatistics",
            "ServerLive",
            "ServerMetadata",
            "ServerReady"
        ]
    );
}

#[test]
fn native_services_are_in_the_descriptor_set() {
    let set = FileDescriptorSet::decode(FILE_DESCRIPTOR_SET).unwrap();
    let services: Vec<String> = set
        .file
        .iter()
        .flat_map(|f| {
            f.service
                .iter()
                .map(move |s| format!("{}.{}", f.package(), s.name()))
        })
        .collect();
    for name in [
        edgeinfer::service_names::INFERENCE,
        edgeinfer::service_names::EDGE_ADMIN,
        edgeinfer::service_names::MODEL_ADMIN,
        edgeinfer::service_names::OIP,
    ] {
        assert!(services.iter().any(|s| s == name), "{name} missing");
    }
}

//! Property tests of the input decoders: whatever a client sends, decoding returns either an
//! input of the model's size with every value in [0, 1], or an error; it never panics. The
//! decoders are what untrusted bytes meet first, so this covers the whole space proptest can
//! reach cheaply: arbitrary bytes, corrupted real images, arbitrary tensors and floats.

use std::io::Cursor;

use edgeinfer::inference::InferTensorContents;
use edgeinfer::inference::model_infer_request::InferInputTensor;
use edgeinfer::v1::Pixels;
use edgeinfer::v1::infer_request::Input;
use edgeinfer_serving::input::{
    Decoded, InputLimits, InputSpec, decode_image, decode_native, decode_oip,
};
use proptest::prelude::*;

fn spec() -> InputSpec {
    InputSpec {
        shape: vec![1, 28, 28],
    }
}

fn limits() -> InputLimits {
    InputLimits {
        max_image_bytes: 64 << 10,
        max_batch_rows: 8,
        ..InputLimits::default()
    }
}

fn assert_model_input(d: &Decoded) {
    assert_eq!(d.values.len(), 784);
    assert!(
        d.values.iter().all(|v| (0.0..=1.0).contains(v)),
        "a value outside [0, 1]"
    );
}

/// A small valid PNG, to be corrupted.
fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::GrayImage::from_fn(width, height, |x, y| image::Luma([(x * 7 + y * 3) as u8]));
    let mut out = Vec::new();
    img.write_to(&mut Cursor::new(&mut out), image::ImageFormat::Png)
        .unwrap();
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_as_an_image(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        if let Ok(d) = decode_image(&bytes, &spec(), &limits()) {
            assert_model_input(&d);
        }
    }

    #[test]
    fn corrupted_pngs(
        width in 1u32..64,
        height in 1u32..64,
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut bytes = png(width, height);
        for (at, value) in flips {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        bytes.truncate(cut.index(bytes.len()) + 1);
        if let Ok(d) = decode_image(&bytes, &spec(), &limits()) {
            assert_model_input(&d);
        }
    }

    #[test]
    fn float_pixels_are_accepted_exactly_when_valid(
        values in proptest::collection::vec(
            prop_oneof![0.0f32..=1.0, any::<f32>()],
            780..788,
        )
    ) {
        let valid = values.len() == 784 && values.iter().all(|v| (0.0..=1.0).contains(v));
        let got = decode_native(Some(&Input::Pixels(Pixels { values })), &spec(), &limits());
        match got {
            Ok(d) => {
                prop_assert!(valid);
                assert_model_input(&d);
            }
            Err(e) => {
                prop_assert!(!valid);
                prop_assert!(e.to_string().starts_with("pixels.values"), "{e}");
            }
        }
    }

    #[test]
    fn arbitrary_oip_tensors(
        datatype in prop_oneof![
            Just("FP32".to_string()),
            Just("UINT8".to_string()),
            Just("INT64".to_string()),
            ".{0,6}",
        ],
        shape in proptest::collection::vec(
            prop_oneof![-2i64..12, Just(784), Just(28), Just(i64::MAX), Just(i64::MIN)],
            0..5,
        ),
        raw in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..8000)),
        fp32 in proptest::collection::vec(any::<f32>(), 0..1600),
        uint in proptest::collection::vec(0u32..300, 0..1600),
    ) {
        let tensor = InferInputTensor {
            name: "input".into(),
            datatype,
            shape,
            parameters: Default::default(),
            contents: Some(InferTensorContents {
                fp32_contents: fp32,
                uint_contents: uint,
                ..Default::default()
            }),
        };
        if let Ok(rows) = decode_oip(&tensor, raw.as_deref(), &spec(), &limits()) {
            prop_assert!(!rows.is_empty() && rows.len() <= 8);
            for row in &rows {
                assert_model_input(row);
            }
        }
    }

    #[test]
    fn well_formed_uint8_batches_decode_row_by_row(
        rows in 1usize..8,
        four_dims in any::<bool>(),
        seed in any::<u8>(),
    ) {
        let shape = if four_dims { vec![rows as i64, 1, 28, 28] } else { vec![rows as i64, 784] };
        let raw: Vec<u8> = (0..rows * 784).map(|i| (i as u8).wrapping_mul(seed)).collect();
        let tensor = InferInputTensor {
            name: "input".into(),
            datatype: "UINT8".into(),
            shape,
            parameters: Default::default(),
            contents: None,
        };
        let decoded = decode_oip(&tensor, Some(&raw), &spec(), &limits()).unwrap();
        prop_assert_eq!(decoded.len(), rows);
        for (r, row) in decoded.iter().enumerate() {
            assert_model_input(row);
            prop_assert_eq!(row.to_u8(), &raw[r * 784..(r + 1) * 784]);
        }
    }
}

//! `edgeinfer infer --explain FILE.png`: an answer's attribution as a heat map beside the image
//! the model saw.

use std::path::Path;

use anyhow::{Context, Result, bail};
use edgeinfer::v1::infer_request::Input;
use edgeinfer_serving::input::{InputLimits, InputSpec, decode_image};
use plotters::prelude::*;

/// Side of the square images these commands send (MNIST's 28 x 28).
const SIDE: usize = 28;
/// Screen pixels per input pixel.
const SCALE: usize = 10;

/// The input as the model sees it: floats in [0, 1], row-major. Encoded images go through the
/// servers' own conversion (grayscale, resized, inverted when the background is light).
pub fn model_view(input: &Input) -> Result<Vec<f32>> {
    Ok(match input {
        Input::Raw(bytes) => bytes.iter().map(|&b| f32::from(b) / 255.0).collect(),
        Input::Pixels(p) => p.values.clone(),
        Input::Values(v) => v.values.clone(),
        Input::Image(bytes) => {
            let spec = InputSpec {
                shape: vec![1, SIDE, SIDE],
            };
            decode_image(bytes, &spec, &InputLimits::default())
                .context("decoding the image to draw beside its explanation")?
                .values
        }
    })
}

/// Writes `seen` (left, gray) and `explanation` (right: red where it pushed towards the label,
/// blue where away, white where neither, scaled by the largest magnitude) as a PNG.
pub fn write_png(path: &Path, seen: &[f32], explanation: &[f32]) -> Result<()> {
    if explanation.is_empty() {
        bail!("the server sent no explanation (a server that predates `explain`?)");
    }
    if explanation.len() != seen.len() || seen.len() != SIDE * SIDE {
        bail!(
            "an explanation of {} values for an input of {}: expected {} ({SIDE} x {SIDE})",
            explanation.len(),
            seen.len(),
            SIDE * SIDE
        );
    }
    let panel = (SIDE * SCALE) as u32;
    let gap = SCALE as u32;
    let root = BitMapBackend::new(path, (2 * panel + gap, panel)).into_drawing_area();
    let draw = || -> Result<(), Box<dyn std::error::Error + '_>> {
        root.fill(&WHITE)?;
        let peak = explanation
            .iter()
            .fold(0.0f32, |m, v| m.max(v.abs()))
            .max(f32::MIN_POSITIVE);
        for (i, (&x, &a)) in seen.iter().zip(explanation).enumerate() {
            let (row, col) = ((i / SIDE) as i32, (i % SIDE) as i32);
            let cell = |left: i32| {
                let (x0, y0) = (left + col * SCALE as i32, row * SCALE as i32);
                [(x0, y0), (x0 + SCALE as i32, y0 + SCALE as i32)]
            };
            let gray = (255.0 * (1.0 - x.clamp(0.0, 1.0))) as u8;
            root.draw(&Rectangle::new(
                cell(0),
                RGBColor(gray, gray, gray).filled(),
            ))?;
            let fade = (255.0 * (1.0 - (a.abs() / peak).min(1.0))) as u8;
            let heat = if a >= 0.0 {
                RGBColor(255, fade, fade)
            } else {
                RGBColor(fade, fade, 255)
            };
            root.draw(&Rectangle::new(cell((panel + gap) as i32), heat.filled()))?;
        }
        root.present()?;
        Ok(())
    };
    draw().map_err(|e| anyhow::anyhow!("writing {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heat_map_is_a_png_of_two_panels_and_bad_lengths_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("e.png");
        let seen: Vec<f32> = (0..784).map(|i| (i % 28) as f32 / 27.0).collect();
        let explanation: Vec<f32> = (0..784).map(|i| (i as f32 - 392.0) / 392.0).collect();
        write_png(&path, &seen, &explanation).unwrap();
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
        // The PNG header's width and height: two panels and a gap, one panel high.
        let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
        let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
        assert_eq!((width, height), (2 * 280 + 10, 280));
        let err = write_png(&path, &seen, &explanation[..100]).unwrap_err();
        assert!(err.to_string().contains("100 values"), "{err}");
        let err = write_png(&path, &seen, &[]).unwrap_err();
        assert!(err.to_string().contains("no explanation"), "{err}");
    }
}

//! Random distortions of 28x28 training images, drawn anew each time an image enters a batch:
//! whole-pixel translation, and continuous distortions resampled bilinearly: rotation, scaling
//! and the elastic deformation of Simard, Steinkraus and Platt (2003). What each did for the
//! edge MLP is measured in models/MODELS.md ("edge-mlp, version 2").
//!
//! Everything random comes from the caller's ChaCha stream, so a seed gives the same images.
//! Translation alone copies pixels and is exact; the continuous distortions use `f32`
//! trigonometry and exponentials, the same on every platform this project builds for in
//! practice but not promised bit for bit by Rust.

use rand::Rng;
use rand_chacha::ChaCha8Rng;

use crate::ModelError;
use crate::nets::IMAGE_LEN as LEN;

/// Side of the square images.
const SIDE: usize = 28;
const _: () = assert!(SIDE * SIDE == LEN);

/// The largest translation: one more moves a whole image out of its frame.
pub const MAX_SHIFT: usize = SIDE - 1;
/// The largest rotation, in degrees either way.
pub const MAX_ROTATE_DEGREES: f32 = 180.0;
/// The largest scaling, as a fraction either way (1 would shrink an image to a point).
pub const MAX_SCALE: f32 = 0.5;
/// The largest elastic strength, in pixels.
pub const MAX_ELASTIC_ALPHA: f32 = 100.0;
/// Standard deviation, in pixels, of the Gaussian that smooths the elastic displacement field:
/// Simard et al.'s choice for MNIST, smooth enough that strokes bend rather than tear.
pub const ELASTIC_SIGMA: f32 = 4.0;

/// How to distort. The default distorts nothing.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Distortion {
    /// Translation by a whole number of pixels drawn in `[-shift, shift]` along each axis; the
    /// uncovered border is black (0), like MNIST's own.
    pub shift: usize,
    /// Rotation about the centre by an angle drawn in `[-rotate, rotate]` degrees.
    pub rotate_degrees: f32,
    /// Scaling about the centre by a factor drawn in `[1 - scale, 1 + scale]`.
    pub scale: f32,
    /// Elastic deformation: each pixel's source moves by a random field of uniform values in
    /// [-1, 1], smoothed by a Gaussian of [`ELASTIC_SIGMA`] and multiplied by this many pixels.
    pub elastic_alpha: f32,
}

// === impl Distortion ===

impl Distortion {
    /// Translation only.
    pub fn shift(pixels: usize) -> Self {
        Self {
            shift: pixels,
            ..Self::default()
        }
    }

    /// Whether it leaves images as they are.
    pub fn is_none(&self) -> bool {
        self.shift == 0 && !self.is_continuous()
    }

    fn is_continuous(&self) -> bool {
        self.rotate_degrees > 0.0 || self.scale > 0.0 || self.elastic_alpha > 0.0
    }

    /// Refuses settings outside their ranges, naming the setting.
    pub fn check(&self) -> Result<(), ModelError> {
        let within = |name: &str, v: f32, max: f32, unit: &str| {
            if v.is_finite() && (0.0..=max).contains(&v) {
                Ok(())
            } else {
                Err(ModelError::Input(format!(
                    "{name} {v}: must be from 0 to {max}{unit}"
                )))
            }
        };
        if self.shift > MAX_SHIFT {
            return Err(ModelError::Input(format!(
                "an augmentation shift of {} pixels moves a {SIDE}x{SIDE} image out of its frame",
                self.shift
            )));
        }
        within(
            "rotation",
            self.rotate_degrees,
            MAX_ROTATE_DEGREES,
            " degrees",
        )?;
        within("scaling", self.scale, MAX_SCALE, "")?;
        within(
            "elastic strength",
            self.elastic_alpha,
            MAX_ELASTIC_ALPHA,
            " pixels",
        )
    }

    /// Rows `rows` of `pixels` (28x28 images, row-major), each distorted by draws from `rng`.
    /// The translation is drawn first, so translation alone gives the images it always gave.
    pub fn apply(&self, pixels: &[f32], rows: &[u32], rng: &mut ChaCha8Rng) -> Vec<f32> {
        // i32, not isize: rand samples the same values from a seed on every platform.
        let s = self.shift as i32;
        let mut out = vec![0.0f32; rows.len() * LEN];
        let continuous = self.is_continuous();
        let mut field = (self.elastic_alpha > 0.0).then(ElasticField::new);
        for (dst, &row) in out.chunks_exact_mut(LEN).zip(rows) {
            let src = &pixels[row as usize * LEN..][..LEN];
            let dx = rng.random_range(-s..=s);
            let dy = rng.random_range(-s..=s);
            if continuous {
                self.warp(src, dst, (dx as f32, dy as f32), field.as_mut(), rng);
            } else {
                translate(src, dst, dx as isize, dy as isize);
            }
        }
        out
    }

    /// Bilinear resampling of `src` into `dst` through the inverse of: elastic displacement,
    /// then scaling and rotation about the centre, then translation by `shift`.
    fn warp(
        &self,
        src: &[f32],
        dst: &mut [f32],
        shift: (f32, f32),
        mut field: Option<&mut ElasticField>,
        rng: &mut ChaCha8Rng,
    ) {
        let draw = |rng: &mut ChaCha8Rng, max: f32| {
            if max > 0.0 {
                rng.random_range(-max..=max)
            } else {
                0.0
            }
        };
        let angle = draw(rng, self.rotate_degrees).to_radians();
        let factor = 1.0 + draw(rng, self.scale);
        let (sin, cos) = angle.sin_cos();
        if let Some(field) = field.as_deref_mut() {
            field.draw(rng);
        }
        let centre = (SIDE as f32 - 1.0) / 2.0;
        for y in 0..SIDE {
            for x in 0..SIDE {
                let u = x as f32 - centre - shift.0;
                let v = y as f32 - centre - shift.1;
                let mut sx = (cos * u + sin * v) / factor + centre;
                let mut sy = (-sin * u + cos * v) / factor + centre;
                if let Some(field) = field.as_deref() {
                    sx += self.elastic_alpha * field.dx[y * SIDE + x];
                    sy += self.elastic_alpha * field.dy[y * SIDE + x];
                }
                dst[y * SIDE + x] = bilinear(src, sx, sy);
            }
        }
    }
}

/// Says what is drawn, for progress lines: "shifted up to 2 px, rotated up to 10 degrees".
impl std::fmt::Display for Distortion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if self.shift > 0 {
            parts.push(format!("shifted up to {} px", self.shift));
        }
        if self.rotate_degrees > 0.0 {
            parts.push(format!("rotated up to {} degrees", self.rotate_degrees));
        }
        if self.scale > 0.0 {
            parts.push(format!("scaled by up to {} %", self.scale * 100.0));
        }
        if self.elastic_alpha > 0.0 {
            parts.push(format!(
                "deformed elastically ({} px, sigma {ELASTIC_SIGMA})",
                self.elastic_alpha
            ));
        }
        if parts.is_empty() {
            f.write_str("as they are")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// `src` moved by `(dx, dy)` whole pixels into `dst` (all zeros on entry).
fn translate(src: &[f32], dst: &mut [f32], dx: isize, dy: isize) {
    for y in 0..SIDE {
        let Some(sy) = y.checked_add_signed(-dy).filter(|&v| v < SIDE) else {
            continue;
        };
        // Destination columns whose source column sx = x - dx lies in the image.
        let x0 = dx.max(0) as usize;
        let x1 = (SIDE as isize + dx.min(0)) as usize;
        let sx0 = (x0 as isize - dx) as usize;
        dst[y * SIDE + x0..y * SIDE + x1]
            .copy_from_slice(&src[sy * SIDE + sx0..sy * SIDE + sx0 + (x1 - x0)]);
    }
}

/// `img` at a fractional position, 0 outside the image.
fn bilinear(img: &[f32], x: f32, y: f32) -> f32 {
    let (x0, y0) = (x.floor(), y.floor());
    let (fx, fy) = (x - x0, y - y0);
    let at = |xi: f32, yi: f32| {
        if (0.0..SIDE as f32).contains(&xi) && (0.0..SIDE as f32).contains(&yi) {
            img[yi as usize * SIDE + xi as usize]
        } else {
            0.0
        }
    };
    let top = at(x0, y0) * (1.0 - fx) + at(x0 + 1.0, y0) * fx;
    let bottom = at(x0, y0 + 1.0) * (1.0 - fx) + at(x0 + 1.0, y0 + 1.0) * fx;
    top * (1.0 - fy) + bottom * fy
}

/// A smoothed random displacement field, its buffers reused from image to image.
struct ElasticField {
    dx: Vec<f32>,
    dy: Vec<f32>,
    scratch: Vec<f32>,
    kernel: Vec<f32>,
}

impl ElasticField {
    fn new() -> Self {
        let radius = (3.0 * ELASTIC_SIGMA).ceil() as isize;
        let mut kernel: Vec<f32> = (-radius..=radius)
            .map(|i| (-((i * i) as f32) / (2.0 * ELASTIC_SIGMA * ELASTIC_SIGMA)).exp())
            .collect();
        let sum: f32 = kernel.iter().sum();
        kernel.iter_mut().for_each(|k| *k /= sum);
        Self {
            dx: vec![0.0; LEN],
            dy: vec![0.0; LEN],
            scratch: vec![0.0; LEN],
            kernel,
        }
    }

    /// Fresh uniform values in [-1, 1], each component smoothed along rows, then columns.
    fn draw(&mut self, rng: &mut ChaCha8Rng) {
        for component in [&mut self.dx, &mut self.dy] {
            component
                .iter_mut()
                .for_each(|v| *v = rng.random_range(-1.0f32..=1.0));
            blur(component, &mut self.scratch, &self.kernel, 1, SIDE);
            blur(&self.scratch, component, &self.kernel, SIDE, 1);
        }
    }
}

/// One pass of a separable blur of a 28x28 field: along rows when `step` is 1 (`stride` the
/// row length), along columns when `step` is the row length; outside the field counts as 0.
fn blur(src: &[f32], dst: &mut [f32], kernel: &[f32], step: usize, stride: usize) {
    let radius = (kernel.len() / 2) as isize;
    for line in 0..SIDE {
        for i in 0..SIDE {
            let mut acc = 0.0;
            for (k, &w) in kernel.iter().enumerate() {
                let j = i as isize + k as isize - radius;
                if (0..SIDE as isize).contains(&j) {
                    acc += w * src[line * stride + j as usize * step];
                }
            }
            dst[line * stride + i * step] = acc;
        }
    }
}

#[cfg(test)]
mod tests {
    use rand::SeedableRng;

    use super::*;

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(9)
    }

    /// The offset `(dx, dy)` that turns `src` into `dst`, if one within `max` does.
    fn offset_of(src: &[f32], dst: &[f32], max: isize) -> Option<(isize, isize)> {
        let side = SIDE as isize;
        let at = |img: &[f32], x: isize, y: isize| {
            if (0..side).contains(&x) && (0..side).contains(&y) {
                img[(y * side + x) as usize]
            } else {
                0.0
            }
        };
        (-max..=max)
            .flat_map(|dy| (-max..=max).map(move |dx| (dx, dy)))
            .find(|&(dx, dy)| {
                (0..side).all(|y| (0..side).all(|x| at(dst, x, y) == at(src, x - dx, y - dy)))
            })
    }

    #[test]
    fn translation_moves_whole_images_by_offsets_up_to_the_limit() {
        // Every pixel distinct and non-zero, so an offset is recognised exactly.
        let a: Vec<f32> = (0..LEN).map(|i| 1.0 + i as f32).collect();
        let b: Vec<f32> = a.iter().map(|v| -v).collect();
        let pixels = [a.clone(), b.clone()].concat();
        let mut rng = rng();
        let mut seen = std::collections::HashSet::new();
        for _ in 0..200 {
            let out = Distortion::shift(3).apply(&pixels, &[1, 0], &mut rng);
            let (first, second) = out.split_at(LEN);
            seen.insert(offset_of(&b, first, 3).expect("row 1, moved by at most 3"));
            seen.insert(offset_of(&a, second, 3).expect("row 0, moved by at most 3"));
        }
        // All 49 offsets occur, each axis independently.
        assert_eq!(seen.len(), 49);
        // No distortion: the images as they are.
        let none = Distortion::default();
        assert!(none.is_none());
        assert_eq!(none.apply(&pixels, &[1, 0], &mut rng), [b, a].concat());
    }

    /// The two paths agree: resampling with no rotation, scaling or deformation is the exact
    /// whole-pixel copy, so only the draws, not the pixels, depend on which path runs.
    #[test]
    fn the_warp_without_continuous_distortion_is_the_translation() {
        let img: Vec<f32> = (0..LEN).map(|i| (i % 97) as f32 / 97.0).collect();
        let mut rng = rng();
        for (dx, dy) in [(0, 0), (3, -2), (-27, 5), (1, 27)] {
            let mut copied = vec![0.0; LEN];
            translate(&img, &mut copied, dx, dy);
            let mut warped = vec![0.0; LEN];
            Distortion::default().warp(&img, &mut warped, (dx as f32, dy as f32), None, &mut rng);
            assert_eq!(warped, copied, "shift ({dx}, {dy})");
        }
    }

    /// A horizontal bar on row 13, one pixel wide and 20 long.
    fn bar() -> Vec<f32> {
        let mut img = vec![0.0; LEN];
        img[13 * SIDE + 4..13 * SIDE + 24].fill(1.0);
        img
    }

    #[test]
    fn a_right_angle_turns_a_horizontal_bar_vertical_and_scaling_grows_it() {
        let d = Distortion {
            rotate_degrees: 90.0,
            ..Distortion::default()
        };
        // Each draw is between -90 and 90 degrees: the draw nearest a right angle puts the
        // bar's ink in the two central columns (which one depends on the sign) and not on its row.
        let mut rng = rng();
        let column = |img: &[f32]| -> f32 {
            (2..26)
                .map(|y| img[y * SIDE + 13] + img[y * SIDE + 14])
                .sum()
        };
        let turned = (0..500)
            .map(|_| d.apply(&bar(), &[0], &mut rng))
            .max_by(|a, b| column(a).total_cmp(&column(b)))
            .unwrap();
        let row: f32 = (0..SIDE)
            .filter(|x| !(12..16).contains(x))
            .map(|x| turned[13 * SIDE + x])
            .sum();
        assert!(
            column(&turned) > 17.0 && row < 1.0,
            "column {} row {row}",
            column(&turned)
        );

        // Ink scales with area, the factor squared: 20 x [0.49, 1.69] for factors 1 -+ 0.3.
        let ink = |img: &[f32]| img.iter().sum::<f32>();
        let d = Distortion {
            scale: 0.3,
            ..Distortion::default()
        };
        let inks: Vec<f32> = (0..200)
            .map(|_| ink(&d.apply(&bar(), &[0], &mut rng)))
            .collect();
        let (lo, hi) = inks
            .iter()
            .fold((f32::MAX, f32::MIN), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        assert!(
            lo < 13.0 && hi > 30.0 && lo > 9.0 && hi < 36.0,
            "{lo}..{hi}"
        );
    }

    #[test]
    fn elastic_fields_are_smooth_bounded_and_seeded() {
        let mut field = ElasticField::new();
        let mut rng = rng();
        field.draw(&mut rng);
        let first = field.dx.clone();
        // Neighbours move together; the field is far smaller than its raw [-1, 1] values.
        let max = first.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(max > 0.0 && max < 0.5, "max displacement {max}");
        let step: f32 = (0..SIDE - 1)
            .map(|x| (first[14 * SIDE + x + 1] - first[14 * SIDE + x]).abs())
            .fold(0.0, f32::max);
        assert!(step < max / 2.0, "largest step {step} against {max}");

        let d = Distortion {
            elastic_alpha: 8.0,
            ..Distortion::default()
        };
        let img = bar();
        let a = d.apply(&img, &[0], &mut ChaCha8Rng::seed_from_u64(3));
        assert_eq!(a, d.apply(&img, &[0], &mut ChaCha8Rng::seed_from_u64(3)));
        assert_ne!(a, img);
        assert!(
            a.iter()
                .all(|v| v.is_finite() && (0.0..=1.0 + 1e-6).contains(v))
        );
    }

    #[test]
    fn settings_outside_their_ranges_are_refused_by_name() {
        let refused = |d: Distortion, what: &str| {
            let e = d.check().unwrap_err().to_string();
            assert!(e.contains(what), "{e}");
        };
        refused(Distortion::shift(SIDE), "out of its frame");
        let base = Distortion::default();
        refused(
            Distortion {
                rotate_degrees: -1.0,
                ..base
            },
            "rotation",
        );
        refused(Distortion { scale: 0.9, ..base }, "scaling");
        refused(
            Distortion {
                elastic_alpha: f32::NAN,
                ..base
            },
            "elastic strength",
        );
        assert!(
            Distortion {
                rotate_degrees: 15.0,
                scale: 0.1,
                elastic_alpha: 30.0,
                shift: 2
            }
            .check()
            .is_ok()
        );
    }
}

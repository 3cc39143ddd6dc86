//! Test-time augmentation: the views of an image a trained model scores and
//! averages (`predict --tta`, `eval --tta`). Each view is made as the
//! validation transform makes its one (the shorter side resized, padded
//! where the crop is larger), then cropped as torchvision's transforms crop:
//! `CenterCrop` and its mirror (`flip`), `FiveCrop` (the four corners, then
//! the centre) and `TenCrop` (those, then their mirrors).

use super::transforms::{center_offset, crop, resized_for_crop, Sizing};
use serde::{Deserialize, Serialize};
use tch::Tensor;

/// Which views of each image are averaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Tta {
    /// The validation transform's one view.
    #[default]
    None,
    /// The centre crop and its mirror image.
    Flip,
    /// The four corner crops and the centre crop.
    FiveCrop,
    /// The five crops and their mirror images.
    TenCrop,
}

impl Tta {
    /// Views per image.
    pub fn views(self) -> usize {
        match self {
            Tta::None => 1,
            Tta::Flip => 2,
            Tta::FiveCrop => 5,
            Tta::TenCrop => 10,
        }
    }
}

/// The views of `image` (`[3, H, W]` u8), each `[3, S, S]` in [0, 1], stacked
/// `[views, 3, S, S]`.
pub fn views(image: &Tensor, sizing: &Sizing, tta: Tta) -> Tensor {
    let resized = resized_for_crop(image, sizing);
    let (_, h, w) = resized.size3().expect("[3, H, W]");
    let size = sizing.size;
    let centre = crop(&resized, center_offset(h, size), center_offset(w, size), size);
    let five = || {
        let corners = [(0, 0), (0, w - size), (h - size, 0), (h - size, w - size)];
        let mut crops: Vec<Tensor> = corners.iter().map(|&(top, left)| crop(&resized, top, left, size)).collect();
        crops.push(centre.shallow_clone());
        crops
    };
    let mirrored = |crops: &[Tensor]| crops.iter().map(|c| c.flip([2])).collect::<Vec<_>>();
    let crops = match tta {
        Tta::None => vec![centre.shallow_clone()],
        Tta::Flip => vec![centre.shallow_clone(), centre.flip([2])],
        Tta::FiveCrop => five(),
        Tta::TenCrop => {
            let mut crops = five();
            let mirrors = mirrored(&crops);
            crops.extend(mirrors);
            crops
        }
    };
    Tensor::stack(&crops, 0) / 255.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::transforms::{val_transform_sized, Interpolation};
    use tch::{Device, Kind};

    /// A `[3, 20, 30]` image whose pixel at (y, x) holds y in channel 0 and
    /// x in channel 1, so a crop tells where it was taken.
    fn coordinates() -> Tensor {
        let ys = Tensor::arange(20, (Kind::Uint8, Device::Cpu)).view([20, 1]).expand([20, 30], false);
        let xs = Tensor::arange(30, (Kind::Uint8, Device::Cpu)).view([1, 30]).expand([20, 30], false);
        Tensor::stack(&[ys, xs.shallow_clone(), xs], 0)
    }

    /// No resizing (the shorter side is already 20), crops of 16.
    const SIZING: Sizing = Sizing { size: 16, resize: 20, interpolation: Interpolation::Bilinear };

    fn top_left(view: &Tensor) -> (i64, i64) {
        let at = |c: i64| (view.double_value(&[c, 0, 0]) * 255.0).round() as i64;
        (at(0), at(1))
    }

    #[test]
    fn one_view_is_the_validation_transform() {
        let image = coordinates();
        assert_eq!(views(&image, &SIZING, Tta::None).get(0), val_transform_sized(&image, &SIZING));
    }

    #[test]
    fn five_crops_are_the_corners_then_the_centre_and_ten_adds_their_mirrors() {
        let five = views(&coordinates(), &SIZING, Tta::FiveCrop);
        let corners: Vec<(i64, i64)> = (0..5).map(|i| top_left(&five.get(i))).collect();
        assert_eq!(corners, [(0, 0), (0, 14), (4, 0), (4, 14), (2, 7)]);
        let ten = views(&coordinates(), &SIZING, Tta::TenCrop);
        assert_eq!(ten.size(), [10, 3, 16, 16]);
        assert_eq!(ten.narrow(0, 0, 5), five);
        assert_eq!(ten.narrow(0, 5, 5), five.flip([3]));
        let flip = views(&coordinates(), &SIZING, Tta::Flip);
        assert_eq!(flip.get(1), five.get(4).flip([2]));
        // The mirror of the centre crop starts at its right edge.
        assert_eq!(top_left(&flip.get(1)), (2, 7 + 15));
    }
}

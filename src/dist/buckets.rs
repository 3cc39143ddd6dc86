//! Gradient buckets, as DDP's `bucket_cap_mb` makes them: consecutive
//! tensors of one dtype and device flattened into one buffer, so that a
//! model's hundreds of gradients travel in a few collectives.

use std::ops::Range;
use tch::Tensor;

/// The index ranges of `items` (each a key, such as dtype and device, and a
/// size in bytes) that go together: consecutive items of one key, at most
/// `cap_bytes` together; an item larger than the cap is a bucket of its own.
pub fn buckets<K: PartialEq>(items: &[(K, usize)], cap_bytes: usize) -> Vec<Range<usize>> {
    let mut ranges: Vec<Range<usize>> = Vec::new();
    let mut bytes = 0;
    for (index, (key, size)) in items.iter().enumerate() {
        let joins = ranges.last().is_some_and(|last| items[last.start].0 == *key && bytes + size <= cap_bytes);
        match ranges.last_mut() {
            Some(last) if joins => {
                last.end = index + 1;
                bytes += size;
            }
            _ => {
                ranges.push(index..index + 1);
                bytes = *size;
            }
        }
    }
    ranges
}

/// One bucket: the buffer a collective carries and the tensors it stands for.
pub struct Bucket {
    buffer: Tensor,
    /// The tensors flattened into `buffer`; empty when `buffer` is the one tensor itself.
    members: Vec<Tensor>,
}

impl Bucket {
    /// One contiguous tensor travels as itself; several (or a strided one)
    /// are copied into a flat buffer.
    pub fn pack(tensors: &[Tensor]) -> Self {
        tch::no_grad(|| match tensors {
            [one] if one.is_contiguous() => Self { buffer: one.shallow_clone(), members: Vec::new() },
            _ => {
                let flat: Vec<Tensor> = tensors.iter().map(|t| t.reshape([-1])).collect();
                Self { buffer: Tensor::cat(&flat, 0), members: tensors.iter().map(Tensor::shallow_clone).collect() }
            }
        })
    }

    pub fn buffer(&self) -> &Tensor {
        &self.buffer
    }

    /// Copies the buffer back into the tensors it was packed from.
    pub fn unpack(&self) {
        tch::no_grad(|| {
            let mut offset = 0;
            for member in &self.members {
                let numel = member.numel() as i64;
                let part = self.buffer.narrow(0, offset, numel).view_as(member);
                member.shallow_clone().copy_(&part);
                offset += numel;
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Kind;

    #[test]
    fn consecutive_items_fill_a_bucket_up_to_the_cap() {
        let items = [('f', 4), ('f', 4), ('f', 4), ('f', 8), ('f', 1)];
        assert_eq!(buckets(&items, 8), [0..2, 2..3, 3..4, 4..5]);
        let everything = buckets(&items, 100);
        assert_eq!((everything.len(), everything[0].clone()), (1, 0..5));
        assert_eq!(buckets(&items, 12), [0..3, 3..5]);
    }

    #[test]
    fn a_large_item_is_a_bucket_of_its_own() {
        assert_eq!(buckets(&[('f', 1), ('f', 50), ('f', 1)], 10), [0..1, 1..2, 2..3]);
    }

    #[test]
    fn a_new_key_starts_a_bucket() {
        assert_eq!(buckets(&[('f', 1), ('d', 1), ('d', 1), ('f', 1)], 100), [0..1, 1..3, 3..4]);
        assert!(buckets::<char>(&[], 10).is_empty());
    }

    #[test]
    fn pack_and_unpack_round_trip_strided_tensors() {
        let a = Tensor::arange(6, (Kind::Float, tch::Device::Cpu)).reshape([2, 3]);
        let strided = Tensor::arange(6, (Kind::Float, tch::Device::Cpu)).reshape([3, 2]).transpose(0, 1);
        let bucket = Bucket::pack(&[a.shallow_clone(), strided.shallow_clone()]);
        assert_eq!(bucket.buffer().size(), [12]);
        let _ = bucket.buffer().shallow_clone().g_mul_scalar_(2);
        bucket.unpack();
        assert_eq!(Vec::<f32>::try_from(a.reshape([-1])).unwrap(), [0., 2., 4., 6., 8., 10.]);
        assert_eq!(Vec::<f32>::try_from(strided.reshape([-1])).unwrap(), [0., 4., 8., 2., 6., 10.]);
    }

    #[test]
    fn one_contiguous_tensor_travels_as_itself() {
        let a = Tensor::ones([4], (Kind::Float, tch::Device::Cpu));
        let bucket = Bucket::pack(&[a.shallow_clone()]);
        assert_eq!(bucket.buffer().data_ptr(), a.data_ptr());
    }
}

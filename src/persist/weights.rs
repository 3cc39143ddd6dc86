//! Weights into a model: reads a weights file (PyTorch `.pth` state_dict or
//! `.safetensors`), copies its tensors into a [`tch::nn::VarStore`] by name,
//! and names the tensor and both shapes when they disagree. It does not
//! decide which file a model uses (the caller does).

use super::pth::read_state_dict;
use crate::models::Classifier;
use anyhow::{bail, Context, Result};
use std::collections::HashMap;
use std::path::Path;
use tch::nn::VarStore;
use tch::Tensor;

/// Loads published backbone weights into `model` by name, ignoring the
/// file's head; a ViT's position embedding is first fitted to the model's
/// image size ([`Classifier::fit_pretrained`]).
pub fn load_backbone(model: &mut Classifier, weights: &Path) -> Result<()> {
    let mut tensors = read_named_tensors(weights)?;
    model.fit_pretrained(&mut tensors);
    load_into(&mut model.backbone_vs, &tensors, weights)?;
    let known: Vec<String> = model.backbone_vs.variables().into_keys().collect();
    let head_prefix = format!("{}.", model.arch.head_name());
    reject_unknown(&tensors, &known, Some(&head_prefix), weights)
}

/// Loads a whole model (backbone and head), e.g. a saved best model.
pub fn load_all(model: &mut Classifier, weights: &Path) -> Result<()> {
    let tensors = read_named_tensors(weights)?;
    load_into(&mut model.backbone_vs, &tensors, weights)?;
    load_into(&mut model.head_vs, &tensors, weights)?;
    let known: Vec<String> = model.named_tensors().into_iter().map(|(n, _)| n).collect();
    reject_unknown(&tensors, &known, None, weights)
}

/// Reads a weights file: `.safetensors`, or a PyTorch `.pth`/`.pt`/`.bin` state_dict.
pub fn read_named_tensors(path: &Path) -> Result<Vec<(String, Tensor)>> {
    if !path.exists() {
        bail!("{}: weights file not found", path.display());
    }
    let is_safetensors = path.extension().is_some_and(|e| e == "safetensors");
    if is_safetensors {
        Tensor::read_safetensors(path).with_context(|| format!("{}: not a readable .safetensors file", path.display()))
    } else {
        read_state_dict(path)
    }
}

/// Copies `saved` into the `live` tensors by name (onto their devices);
/// every live tensor must be there with its shape, checked first, the
/// error naming the first that is not.
pub fn copy_by_name(live: &[(String, Tensor)], saved: &[(String, Tensor)], what: &str) -> Result<()> {
    let expected: Vec<(String, Vec<i64>)> = live.iter().map(|(n, t)| (n.clone(), t.size())).collect();
    check_complete(saved, &expected, what)?;
    let by_name: HashMap<&str, &Tensor> = saved.iter().map(|(n, t)| (n.as_str(), t)).collect();
    tch::no_grad(|| {
        for (name, var) in live {
            var.shallow_clone().copy_(&by_name[name.as_str()].to_device(var.device()));
        }
    });
    Ok(())
}

/// Copies every variable of `vs` from `tensors` by name; a variable the file
/// lacks, or has with another shape, is an error naming the tensor.
pub fn load_into(vs: &mut VarStore, tensors: &[(String, Tensor)], source: &Path) -> Result<()> {
    let by_name: HashMap<&str, &Tensor> = tensors.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let mut variables: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    variables.sort_by(|a, b| a.0.cmp(&b.0));
    // Shapes first: a checkpoint of another architecture is best explained
    // by the first tensor whose shape differs.
    for (name, var) in &variables {
        let Some(src) = by_name.get(name.as_str()) else {
            continue;
        };
        if src.size() != var.size() {
            bail!(
                "loading {}: tensor {name} has shape {:?} in the file but the model expects {:?} (weights of another architecture?)",
                source.display(),
                src.size(),
                var.size()
            );
        }
    }
    let missing: Vec<&String> =
        variables.iter().map(|(n, _)| n).filter(|n| !by_name.contains_key(n.as_str())).collect();
    if let Some(first) = missing.first() {
        bail!(
            "loading {}: {} model tensor(s) missing from the file, first {first} (weights of another architecture?)",
            source.display(),
            missing.len()
        );
    }
    tch::no_grad(|| {
        for (name, var) in &variables {
            var.shallow_clone().copy_(&by_name[name.as_str()].to_kind(var.kind()));
        }
    });
    Ok(())
}

/// Fails when the file holds tensors the model does not know (other than
/// `num_batches_tracked` counters and names starting with `ignored_prefix`).
pub fn reject_unknown(
    tensors: &[(String, Tensor)],
    known: &[String],
    ignored_prefix: Option<&str>,
    source: &Path,
) -> Result<()> {
    let unknown: Vec<&str> = tensors
        .iter()
        .map(|(n, _)| n.as_str())
        .filter(|n| !n.ends_with("num_batches_tracked"))
        .filter(|n| ignored_prefix.is_none_or(|p| !n.starts_with(p)))
        .filter(|n| !known.iter().any(|k| k == n))
        .collect();
    if let Some(first) = unknown.first() {
        bail!(
            "loading {}: the file has {} tensor(s) this model does not, first {first} (weights of another architecture?)",
            source.display(),
            unknown.len()
        );
    }
    Ok(())
}

/// Checks that `saved` holds a tensor of the right shape for every name in
/// `expected` (what a resumed optimizer needs); names the first one at fault.
pub fn check_complete(saved: &[(String, Tensor)], expected: &[(String, Vec<i64>)], what: &str) -> Result<()> {
    for (name, shape) in expected {
        match saved.iter().find(|(n, _)| n == name) {
            None => bail!("{what}: tensor {name} is missing"),
            Some((_, t)) if t.size() != *shape => {
                bail!("{what}: tensor {name} has shape {:?}, expected {shape:?}", t.size())
            }
            Some(_) => {}
        }
    }
    Ok(())
}

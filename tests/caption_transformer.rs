//! The Transformer captioning network (`--cell transformer`): its explicit
//! gradients equal autograd's (f64, dropout on), decoding one word at a
//! time gives the teacher-forced distributions, features are standardized
//! per channel, and it overfits 50 training captions over a feature grid
//! (greedy samples reproduce them), in the library on random grids and
//! through the tool on digit scenes' Lite0 grids.

use std::sync::{Mutex, MutexGuard};
use tch::nn::VarStore;
use tch::{Device, Kind, Tensor};
use tchlab::caption::decoder::{greedy, Captioner};
use tchlab::caption::model::{build, CellKind, Dims, SpecialTokens};
use tchlab::caption::transformer::TransformerNet;
use tchlab::grad::{gradients, GradMode, Params};
use tchlab::train::optim::{AdamW, Optimizer};

mod common;
use common::gradcheck::rel_error;

const TOKENS: SpecialTokens = SpecialTokens { null: 0, start: 1, end: 2 };
const F64: (Kind, Device) = (Kind::Double, Device::Cpu);

/// Held by every test: torch's generator is global, and the gradient test
/// seeds it to draw the same dropout masks in both passes.
static GENERATOR: Mutex<()> = Mutex::new(());

fn seeded(seed: i64) -> MutexGuard<'static, ()> {
    let generator = GENERATOR.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    tch::manual_seed(seed);
    generator
}

fn dims(features: i64, width: i64, vocabulary: i64) -> Dims {
    Dims { heads: 2, layers: 2, ..Dims::recurrent(features, width, 2 * width, vocabulary) }
}

/// `n` captions of `steps` tokens: `<START>`, words, `<END>`, `<NULL>`s,
/// each of its own random length.
fn captions(n: i64, steps: i64, vocabulary: i64) -> Tensor {
    let captions = Tensor::randint_low(3, vocabulary, [n, steps], (Kind::Int64, Device::Cpu));
    let _ = captions.narrow(1, 0, 1).fill_(TOKENS.start);
    for row in 0..n {
        let end = 2 + (row * 5) % (steps - 2);
        let _ = captions.get(row).narrow(0, end, 1).fill_(TOKENS.end);
        let _ = captions.get(row).narrow(0, end + 1, steps - end - 1).fill_(TOKENS.null);
    }
    captions
}

#[test]
fn explicit_gradients_equal_autograd_with_dropout_on() {
    let _rng = common::seeded(0);
    let _generator = seeded(0);
    let mut vs = VarStore::new(Device::Cpu);
    let net = TransformerNet::new(&vs.root(), dims(6, 8, 11), TOKENS).unwrap();
    vs.double();
    tch::no_grad(|| {
        // Not the initial 0.02 / 1 / 0: every path carries a real gradient.
        for (_, mut var) in vs.trainable_variables().into_iter().map(|v| ((), v)) {
            var.copy_(&(Tensor::randn(var.size(), F64) * 0.3 + var.detach()));
        }
    });
    let features = Tensor::randn([4, 5, 6], F64);
    let captions = captions(4, 9, 11);
    net.set_dropout(0.2);
    let params: Vec<(String, Tensor)> = net.named_parameters();
    tch::manual_seed(5);
    let (loss, explicit) = tch::no_grad(|| net.loss_and_gradients(&features, &captions));
    let wrt: Vec<&Tensor> = params.iter().map(|(_, p)| p).collect();
    tch::manual_seed(5);
    let reference = net.loss(&features, &captions);
    let by_autograd = Tensor::run_backward(&[&reference], &wrt, false, false);
    assert!((loss.double_value(&[]) - reference.double_value(&[])).abs() < 1e-12);
    assert_eq!(explicit.len(), params.len());
    for ((name, param), (e, r)) in params.iter().zip(explicit.iter().zip(&by_autograd)) {
        assert_eq!(e.size(), param.size(), "{name}: shape");
        if name.ends_with("key.bias") {
            // The softmax ignores what a key bias adds to all of a query's scores.
            assert!(e.abs().max().double_value(&[]) < 1e-12 && r.abs().max().double_value(&[]) < 1e-12, "{name}");
            continue;
        }
        let err = rel_error(e, r);
        assert!(err <= 1e-8, "{name}: relative error {err:e} against autograd");
    }
    // Dropout was on: evaluation gives another loss, and the same one twice.
    net.set_dropout(0.0);
    let evaluated = tch::no_grad(|| net.loss(&features, &captions)).double_value(&[]);
    assert!((evaluated - loss.double_value(&[])).abs() > 1e-6, "dropout changed nothing");
    assert_eq!(evaluated, tch::no_grad(|| net.loss(&features, &captions)).double_value(&[]));
}

#[test]
fn decoding_word_by_word_gives_the_teacher_forced_distributions() {
    let _rng = common::seeded(0);
    let _generator = seeded(1);
    let vs = VarStore::new(Device::Cpu);
    let (n, steps, vocabulary, locations) = (3, 7, 13, 5);
    let net = TransformerNet::new(&vs.root(), dims(6, 8, vocabulary), TOKENS).unwrap();
    let features = Tensor::randn([n, locations, 6], (Kind::Float, Device::Cpu));
    // Words only (no <END>, no <NULL>): every target counts.
    let captions = Tensor::randint_low(3, vocabulary, [n, steps], (Kind::Int64, Device::Cpu));
    // With causal attention, the loss over the first k + 1 words less the
    // loss over the first k is the mean −log p(word k | the words before).
    let loss_of_first = |k: i64| match k {
        1 => 0.0,
        _ => tch::no_grad(|| net.loss(&features, &captions.narrow(1, 0, k))).double_value(&[]),
    };
    let mut state = net.begin(&features);
    for t in 0..steps - 1 {
        let step = net.step(&state, &captions.select(1, t));
        let next = captions.select(1, t + 1).unsqueeze(1);
        let decoded = -step.log_probs.gather(1, &next, false).sum(Kind::Double).double_value(&[]) / n as f64;
        let teacher_forced = loss_of_first(t + 2) - loss_of_first(t + 1);
        assert!(
            (decoded - teacher_forced).abs() < 1e-5,
            "step {t}: decoded {decoded}, teacher-forced {teacher_forced}"
        );
        let attention = step.attention.expect("the transformer attends");
        assert_eq!(attention.size(), [n, locations]);
        let sums = attention.sum_dim_intlist([1i64].as_slice(), false, Kind::Double);
        assert!((sums - 1.0).abs().max().double_value(&[]) < 1e-5, "attention weights sum to 1");
        state = step.state;
    }
}

#[test]
fn features_are_standardized_per_channel_over_images_and_locations() {
    let _rng = common::seeded(0);
    let _generator = seeded(2);
    let mut vs = VarStore::new(Device::Cpu);
    let mut net = TransformerNet::new(&vs.root(), dims(3, 8, 9), TOKENS).unwrap();
    // Channels of different scales, one constant; more images than one chunk.
    let scales = Tensor::from_slice(&[1.0f32, 50.0, 0.0]);
    let features =
        Tensor::randn([300, 4, 3], (Kind::Float, Device::Cpu)) * &scales + Tensor::from_slice(&[2.0f32, -7.0, 5.0]);
    net.standardize_features(&features);
    let rows = features.reshape([-1, 3]).to_kind(Kind::Double);
    let variables = vs.variables();
    let mean = variables["feature_mean"].to_kind(Kind::Double);
    let std = variables["feature_std"].to_kind(Kind::Double);
    assert!(rel_error(&mean, &rows.mean_dim([0i64].as_slice(), false, Kind::Double)) < 1e-6);
    let expected_std = rows.std_dim([0i64].as_slice(), false, false);
    assert!(rel_error(&std.narrow(0, 0, 2), &expected_std.narrow(0, 0, 2)) < 1e-5);
    assert_eq!(std.double_value(&[2]), 1.0, "a constant channel is only centred");
    assert!(!variables["feature_mean"].requires_grad(), "statistics are not trained");
    let _ = vs.trainable_variables();
    vs.double();
}

/// 50 images (a 4-location grid of random features each) with one random
/// caption each, learned by heart: the loss falls near zero and the greedy
/// caption of every image is its own.
#[test]
fn transformer_overfits_fifty_training_captions_over_a_grid() {
    let _rng = common::seeded(0);
    let _generator = seeded(4);
    let (images, locations, channels, steps, vocabulary) = (50, 4, 16, 12, 20);
    let features = Tensor::randn([images, locations, channels], (Kind::Float, Device::Cpu));
    let captions = captions(images, steps, vocabulary);
    let vs = VarStore::new(Device::Cpu);
    let net = build(&vs.root(), dims(channels, 64, vocabulary), CellKind::Transformer, TOKENS).unwrap();
    let params = Params::new(net.named_parameters());
    let mut adam = AdamW::new(&params, 0.0);
    let mut last_loss = f64::INFINITY;
    for epoch in 0..80 {
        let order = Tensor::randperm(images, (Kind::Int64, Device::Cpu));
        for batch in order.split(25, 0) {
            let (loss, grads) = gradients(
                GradMode::Manual,
                &*net,
                &params,
                &features.index_select(0, &batch),
                &captions.index_select(0, &batch),
            );
            adam.step(&params, &grads, 5e-3 * 0.98f64.powi(epoch));
            last_loss = loss.double_value(&[]);
        }
    }
    assert!(last_loss < 0.1, "final training loss {last_loss}");
    let sampled = greedy(&*net, &features, (steps - 1) as usize);
    let truths = captions.narrow(1, 1, steps - 1);
    let wrong = sampled.ne_tensor(&truths).any_dim(1, false).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(wrong, 0, "{wrong} of {images} greedy captions differ from their training caption");
}

/// Through the tool on real images: 25 digit scenes (two captions each)
/// with Lite0's grid (its 320-channel last stage); `caption train --cell
/// transformer` learns most of them (a caption is one of its image's two),
/// and `caption sample` captions a training image from the saved model as
/// the run did.
#[cfg(tchlab_data)]
#[test]
fn the_tool_trains_a_transformer_on_scene_grids_and_samples_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("scenes");
    common::run_ok(
        common::caption().args(["scenes", "--train", "25", "--val", "5", "--seed", "3", "--out"]).arg(&data),
    );
    let out = tmp.path().join("run");
    let recipe = "--cell transformer --feature-grid penultimate --epochs 60 --batch-size 25 --lr 2e-3 --lr-decay 1 \
                  --wordvec 64 --hidden 128 --heads 2 --layers 2 --dropout 0 --keep last --threads 1";
    common::run_ok(
        common::caption().args(["train", "--data"]).arg(&data).args(recipe.split_whitespace()).arg("--out").arg(&out),
    );
    let summary = common::read_json(&out.join("summary.json"));
    let first_loss = summary["epochs"][0]["train_loss"].as_f64().unwrap();
    let final_loss = summary["final_train_loss"].as_f64().unwrap();
    assert!(final_loss < first_loss / 5.0, "training loss from {first_loss} to only {final_loss}");
    let samples = common::read_json(&out.join("samples.json"));
    let train: Vec<&serde_json::Value> = samples.as_array().unwrap().iter().filter(|s| s["split"] == "train").collect();
    assert_eq!(train.len(), 25, "every training image sampled");
    let true_captions = train.iter().filter(|s| s["truths"].as_array().unwrap().contains(&s["sampled"])).count();
    assert!(true_captions >= 13, "only {true_captions} of 25 greedy captions of training scenes are true");
    let first =
        train.iter().find(|s| s["image"].as_str().unwrap().ends_with("scene_000000.png")).expect("the first scene");
    let sampled = common::caption()
        .args(["sample", "--json", "--checkpoint"])
        .arg(&out)
        .arg(data.join("train/scene_000000.png"))
        .output()
        .unwrap();
    assert!(sampled.status.success(), "{}", String::from_utf8_lossy(&sampled.stderr));
    let rows: serde_json::Value = serde_json::from_slice(&sampled.stdout).unwrap();
    assert_eq!(rows[0]["caption"], first["sampled"], "the saved model captions as the run did");
}

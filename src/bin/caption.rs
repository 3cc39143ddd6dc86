//! `caption`: recurrent image captioning with hand-derived RNN/LSTM layers,
//! on the course's `coco_captioning/` features or on an image folder with
//! COCO-format captions. Parses and checks arguments, then calls the library.

use anyhow::{bail, Context, Result};
use clap::{Args, FromArgMatches, Parser, Subcommand};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use tchlab::caption::coco_h5;
use tchlab::caption::coco_json::{self, TextOptions};
use tchlab::caption::dataset::CaptionData;
use tchlab::caption::decoder::decode;
use tchlab::caption::evaluate::{self, ScoreRow};
use tchlab::caption::features::{Extractor, FeatureShape};
use tchlab::caption::model::CellKind;
use tchlab::caption::options::TrainArgs;
use tchlab::caption::run::{self, RunOptions};
use tchlab::caption::saved::{self, FeatureSource};
use tchlab::caption::scenes::{self, SceneCounts};
use tchlab::choice_names::Named;
use tchlab::cli::parse::{at_least_one, beam_width};
use tchlab::cli::{options_file, Banner};
use tchlab::interrupt::Interrupt;
use tchlab::models::Arch;
use tchlab::report::Terminal;
use tchlab::run_dir::{Start, BEST_MODEL_FILE};
use tchlab::train::minibatch::Recipe;

#[derive(Parser)]
#[command(
    name = "caption",
    version,
    about = "Image captioning with hand-derived RNN and LSTM layers",
    after_help = "Examples:\n  caption scenes                                   # make the MNIST digit-scene set (data/mnist-scenes)\n  caption train --cell lstm --epochs 20            # train on it, Lite0 features\n  caption train --data data/coco_captioning --max-train 50 --epochs 50   # the course's overfit check\n  caption train --resume runs/caption-lstm           # continue a stopped run\n  caption eval --checkpoint runs/caption-lstm --beam 3   # score its val captions by beam search\n  caption sample --checkpoint runs/caption-lstm photo.jpg\n\n`caption train --help` lists every option with its default."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Train a captioning network, then caption the val images (BLEU, ROUGE-L, CIDEr-D against two baselines) and draw samples.
    Train(Box<TrainArgs>),
    /// Caption the val images again with a trained network (greedy or beam search) and score them as `train` does.
    Eval(EvalArgs),
    /// Caption image files with a trained network.
    Sample(SampleArgs),
    /// Make a captioned image set from MNIST: scenes of two or three digits, captioned from what is where.
    Scenes(ScenesArgs),
}

#[derive(Args)]
struct EvalArgs {
    /// A run folder of `caption train` (or its best_model.safetensors): its model, and its options say which data and features.
    #[arg(long, value_name = "DIR")]
    checkpoint: PathBuf,
    /// Hypotheses kept per image by beam search (1: greedy).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = beam_width, allow_negative_numbers = true)]
    beam: usize,
    /// libtorch's compute threads [default: libtorch's choice, one per core].
    #[arg(long, value_name = "N", value_parser = at_least_one, allow_negative_numbers = true)]
    threads: Option<usize>,
    #[command(flatten)]
    device: tchlab::device::DeviceArg,
}

#[derive(Args)]
struct SampleArgs {
    /// A model saved by `caption train` (its best_model.safetensors, or the run folder).
    #[arg(long, value_name = "PATH")]
    checkpoint: PathBuf,
    /// Image files or folders (searched recursively for image files).
    #[arg(required = true, value_name = "IMAGE|DIR")]
    images: Vec<PathBuf>,
    /// The backbone's weights [default: the file the model was trained with].
    #[arg(long, value_name = "FILE")]
    weights: Option<PathBuf>,
    /// Hypotheses kept per image by beam search (1: greedy).
    #[arg(long, value_name = "K", default_value_t = 1, value_parser = beam_width, allow_negative_numbers = true)]
    beam: usize,
    /// Print a JSON list of {image, caption} ({image, error} for a file that cannot be read).
    #[arg(long)]
    json: bool,
    /// Exit 0 even when some files cannot be read as images.
    #[arg(long)]
    allow_errors: bool,
    /// libtorch's compute threads [default: libtorch's choice, one per core].
    #[arg(long, value_name = "N", value_parser = at_least_one, allow_negative_numbers = true)]
    threads: Option<usize>,
    #[command(flatten)]
    device: tchlab::device::DeviceArg,
}

#[derive(Args)]
struct ScenesArgs {
    /// Folder with MNIST's four IDX files.
    #[arg(long, value_name = "DIR", default_value = "data/mnist")]
    mnist: PathBuf,
    /// Where the scene set is written.
    #[arg(long, value_name = "DIR", default_value = "data/mnist-scenes")]
    out: PathBuf,
    /// Training scenes (from MNIST's training digits).
    #[arg(long, value_name = "N", default_value_t = 4000, value_parser = at_least_one, allow_negative_numbers = true)]
    train: usize,
    /// Val scenes (from MNIST's test digits).
    #[arg(long, value_name = "N", default_value_t = 500, value_parser = at_least_one, allow_negative_numbers = true)]
    val: usize,
    #[command(flatten)]
    seed: tchlab::cli::SeedArg,
    /// Replace the scene set in --out (a folder holding anything else is refused).
    #[arg(long)]
    overwrite: bool,
}

fn backbone_weights(arch: Arch, weights: Option<PathBuf>) -> Result<PathBuf> {
    let path = weights.unwrap_or_else(|| arch.default_weights(Path::new("models")));
    if !path.is_file() {
        bail!(
            "{}: weights for {arch} not found (run scripts/fetch-models.sh {arch}, or give --weights)",
            path.display(),
            arch = arch.name()
        );
    }
    Ok(std::path::absolute(&path)?)
}

/// The options of a fresh run (with those of `--config FILE`; paths made
/// absolute, so that it resumes from any folder), or with `--resume DIR`
/// the run's own.
fn resolve(args: TrainArgs, given: &BTreeSet<String>) -> Result<(TrainArgs, Start)> {
    let Some(dir) = args.run.resume.clone() else {
        let args = match &args.run.config {
            Some(file) => {
                TrainArgs { run: args.run.clone(), ..options_file::merged(&args, file, given, "caption train")? }
            }
            None => args,
        };
        let out = tchlab::run_dir::choose(
            args.out.as_deref(),
            &format!("runs/caption-{}", args.cell.name()),
            args.run.overwrite,
            &Terminal,
        )?;
        return Ok((TrainArgs { out: Some(out), ..args.with_paths_resolved() }, Start::Fresh));
    };
    let mut saved: TrainArgs =
        tchlab::cli::resumed_options(&dir, "caption train", given, &tchlab::cli::resumable::<TrainArgs>())?;
    saved.out = Some(std::path::absolute(&dir)?);
    saved.run = args.run;
    if given.contains("device") {
        saved.device = args.device;
    }
    Ok((saved, Start::Resume))
}

fn train(args: TrainArgs, start: Start, interrupt: &Interrupt) -> Result<()> {
    tchlab::cli::apply_threads(args.run.threads);
    let device = args.device.select()?;
    let config = serde_json::to_value(&args)?;
    let out = args.out.clone().expect("resolved");
    tchlab::run_dir::check(&out, start, args.run.overwrite)?;
    Banner { tool: "caption train", device, seed: Some(args.seed.seed), out: Some(&out) }.print();
    let (data, features, described) = load_data(&args, device)?;
    tchlab::say!(
        "{} training captions of {} images, {} val captions of {} images, vocabulary {} words, feature width {}",
        data.train.num_captions(),
        data.train.captioned_images().len(),
        data.val.num_captions(),
        data.val.captioned_images().len(),
        data.vocab.len(),
        data.train.feature_width()
    );
    let options = RunOptions {
        cell: args.cell,
        hidden: args.hidden,
        wordvec: args.wordvec,
        heads: args.heads,
        layers: args.layers,
        attention_width: args.attention_width,
        dropout: args.dropout_rate(),
        attention_penalty: args.attention_penalty,
        beam: args.beam,
        schedule: Recipe {
            epochs: args.epochs,
            batch_size: args.batch_size,
            lr: args.lr,
            lr_decay: args.lr_decay,
            seed: args.seed.seed,
            grad: args.grad,
        },
        device,
        keep: args.keep,
        out,
        start,
        overwrite: args.run.overwrite,
        features,
        data: described,
        config,
    };
    let summary = run::run(&data, &options, interrupt, &Terminal)?;
    print_scores(&summary.scores);
    tchlab::say!("Results in {}", options.out.display());
    Ok(())
}

/// The captions and image features a run of `args` trains on, where the
/// features come from, and the data described for the results.
fn load_data(args: &TrainArgs, device: tch::Device) -> Result<(CaptionData, FeatureSource, String)> {
    if coco_h5::is_course_folder(&args.data) {
        if let Some(dir) = args.image_dir.as_deref().filter(|d| !d.is_dir()) {
            bail!("--image-dir {}: no such folder", dir.display());
        }
        // The Transformer reads a pooled vector as a memory of one location,
        // as the course's CaptioningTransformer does; attention over one
        // location would have nothing to choose between.
        if let Some(size) = args.image_size {
            bail!(
                "--image-size {size}: sizes the images a backbone sees; {} holds precomputed VGG-16 features",
                args.data.display()
            );
        }
        if args.cell == CellKind::Attention {
            bail!(
                "--cell attention: attends over a grid of image features; {} holds one pooled VGG-16 vector per image (give an image folder, or --cell transformer)",
                args.data.display()
            );
        }
        let data = coco_h5::load(&args.data, args.max_train, args.seed.seed, args.image_dir.as_deref())?;
        Ok((data, FeatureSource::CourseFeatures, format!("{} (VGG-16 fc7 PCA features)", args.data.display())))
    } else {
        if !args.data.is_dir() {
            bail!("{}: no such folder (make the digit-scene set with `caption scenes`)", args.data.display());
        }
        // The course folder's options, which an image folder would silently ignore.
        for (given, option) in [(args.max_train.is_some(), "--max-train"), (args.image_dir.is_some(), "--image-dir")] {
            if given {
                bail!(
                    "{option} is for the course's coco_captioning folder; {} is an image folder",
                    args.data.display()
                );
            }
        }
        let shape = FeatureShape::for_network(args.cell.takes_grid(), args.feature_grid)?;
        shape.check(args.arch)?;
        let weights = backbone_weights(args.arch, args.weights.clone())?;
        let image_size = args.image_size;
        let extractor = Extractor { arch: args.arch, weights: weights.clone(), image_size, device, shape };
        let text = TextOptions { min_count: args.min_count, max_words: args.max_words };
        let data = coco_json::load(&args.data, text, &extractor, &Terminal)?;
        Ok((
            data,
            FeatureSource::Backbone { arch: args.arch, weights, shape, image_size },
            format!("{} ({} features)", args.data.display(), args.arch.name()),
        ))
    }
}

/// The score table of ours and the baselines, and on digit scenes the counts.
fn print_scores(scores: &[ScoreRow]) {
    tchlab::say!(
        "\n{:<48} BLEU-1  BLEU-2  BLEU-3  BLEU-4  ROUGE-L  CIDEr-D",
        "Val BLEU, ROUGE-L, CIDEr-D (COCO scorers)"
    );
    for row in scores {
        let b = row.bleu;
        let (rouge, cider) = (row.rouge_l, row.cider_d);
        tchlab::say!("{:<48} {:.4}  {:.4}  {:.4}  {:.4}  {rouge:.4}   {cider:.4}", row.method, b[0], b[1], b[2], b[3]);
    }
    if let Some(first) = scores.first().and_then(|row| row.scenes) {
        let header = format!("Val scenes ({} scenes, {} digits)", first.scenes, first.digits);
        tchlab::say!("\n{header:<48} layout  digits  exact   digits in place");
        for row in scores {
            let Some(t) = row.scenes else { continue };
            let (layout, digits, exact) = (t.layout_right.count, t.digits_right.count, t.exact_caption.count);
            tchlab::say!("{:<48} {layout:<7} {digits:<7} {exact:<7} {}", row.method, t.digits_in_place.count);
        }
    }
}

/// Captions the val images of a finished run's data with its kept model
/// and writes the scores into the run folder (`evaluation-beam<K>.json`).
fn eval(args: EvalArgs) -> Result<()> {
    tchlab::cli::apply_threads(args.threads);
    let device = args.device.select()?;
    let dir = match args.checkpoint.file_name().is_some_and(|name| name == BEST_MODEL_FILE) {
        true => args.checkpoint.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new(".")),
        false => args.checkpoint.as_path(),
    };
    Banner { tool: "caption eval", device, seed: None, out: Some(dir) }.print();
    let saved_by = tchlab::run_dir::saved_tool(dir).ok().flatten();
    if saved_by.as_deref() != Some("caption train") {
        bail!("{}: not a run folder of `caption train` (caption eval reads its options and its model)", dir.display());
    }
    let trained: TrainArgs = tchlab::cli::resumed_options(dir, "caption train", &BTreeSet::new(), &BTreeSet::new())?;
    let data_folder = trained.data.clone();
    let (net, _store, vocab, card) = saved::load(&dir.join(BEST_MODEL_FILE), device)?;
    // The pictures of a course run's figures are not needed here.
    let (data, features, _) = load_data(&TrainArgs { image_dir: None, ..trained }, device)?;
    if features != card.features {
        bail!("{}: the model read other features than the run's options give now", dir.display());
    }
    if data.vocab.words() != vocab.words() {
        bail!(
            "{}: the model's vocabulary is not the one the captions of {} give now (were they changed?)",
            dir.display(),
            data_folder.display()
        );
    }
    let val = evaluate::caption_split(&*net, &data.val, &data.vocab, args.beam, device);
    let scores = evaluate::score_table(&format!("{} (ours)", run::method_name(card.cell, args.beam)), &val, &data);
    print_scores(&scores);
    let report =
        serde_json::json!({"beam": args.beam, "epoch": card.epoch, "val_loss": card.val_loss, "scores": scores});
    let file = dir.join(format!("evaluation-beam{}.json", args.beam));
    std::fs::write(&file, serde_json::to_string_pretty(&report)?)
        .with_context(|| format!("{}: cannot write", file.display()))?;
    tchlab::say!("Scores in {}", file.display());
    Ok(())
}

fn sample(args: SampleArgs) -> Result<()> {
    tchlab::cli::apply_threads(args.threads);
    let device = args.device.select()?;
    Banner { tool: "caption sample", device, seed: None, out: None }.print();
    let path = if args.checkpoint.is_dir() { args.checkpoint.join(BEST_MODEL_FILE) } else { args.checkpoint.clone() };
    let (net, _store, vocab, card) = saved::load(&path, device)?;
    let FeatureSource::Backbone { arch, weights, shape, image_size } = card.features else {
        bail!(
            "{}: trained on the course's precomputed VGG-16 features, so it cannot caption new image files",
            path.display()
        );
    };
    let weights = args.weights.clone().unwrap_or(weights);
    if !weights.is_file() {
        bail!("{}: the backbone's weights are not there (give --weights FILE)", weights.display());
    }
    let (files, skipped) = tchlab::data::image_folder::collect_images(&args.images)?;
    if skipped > 0 {
        tchlab::say_err!("skipped {skipped} file(s) in the folders given that are not images by extension");
    }
    if files.is_empty() {
        bail!("no image files found in {:?}", args.images);
    }
    let extractor = Extractor { arch, weights, image_size, device, shape };
    let (features, unreadable) = extractor.compute_readable(&files, "images", &Terminal)?;
    let features = features.to_device(device).to_kind(tch::Kind::Float);
    let sampled = decode(&*net, &features, args.beam, evaluate::MAX_SAMPLE_WORDS);
    let mut captions =
        (0..sampled.size()[0]).map(|i| vocab.decode(&Vec::<i64>::try_from(sampled.get(i)).expect("tokens")));
    let rows: Vec<(&PathBuf, Result<String, String>)> = files
        .iter()
        .enumerate()
        .map(|(i, file)| match unreadable.iter().find(|u| u.index == i) {
            Some(u) => (file, Err(u.why.clone())),
            None => (file, Ok(captions.next().expect("a caption per readable image"))),
        })
        .collect();
    if args.json {
        let json: Vec<_> = rows
            .iter()
            .map(|(image, row)| match row {
                Ok(caption) => serde_json::json!({"image": image, "caption": caption}),
                Err(error) => serde_json::json!({"image": image, "error": error}),
            })
            .collect();
        tchlab::say!("{}", serde_json::to_string_pretty(&json)?);
    } else {
        for (image, row) in &rows {
            match row {
                Ok(caption) => tchlab::say!("{}: {caption}", image.display()),
                Err(error) => tchlab::say!("{}: ERROR {error}", image.display()),
            }
        }
    }
    if !unreadable.is_empty() && !args.allow_errors {
        bail!(
            "{} of {} file(s) could not be read as images (--allow-errors to exit 0 anyway)",
            unreadable.len(),
            files.len()
        );
    }
    Ok(())
}

fn main() {
    tchlab::cli::run_main(|| {
        let interrupt = Interrupt::new();
        tchlab::cli::stop_on_ctrl_c(&interrupt);
        let matches = tchlab::cli::matches::<Cli>();
        let given = tchlab::cli::given_to_subcommand::<Cli>(&matches);
        match Cli::from_arg_matches(&matches)?.command {
            Command::Train(args) => {
                let (args, start) = resolve(*args, &given)?;
                train(args, start, &interrupt)
            }
            Command::Eval(args) => eval(args),
            Command::Sample(args) => sample(args),
            Command::Scenes(args) => {
                let counts = SceneCounts { train: args.train, val: args.val, seed: args.seed.seed };
                scenes::make_scenes(&args.mnist, &args.out, counts, args.overwrite, &Terminal)?;
                tchlab::say!("{} train and {} val scenes in {}", args.train, args.val, args.out.display());
                Ok(())
            }
        }
    });
}

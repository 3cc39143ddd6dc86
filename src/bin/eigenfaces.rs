//! `eigenfaces`: PCA of a face set (eigenvalues, eigenfaces, reconstructions,
//! recognition in eigenspace), and `eigenfaces project` for new faces.
//! Parses and checks arguments, then calls the library.

use anyhow::Result;
use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use tchlab::cli::Banner;
use tchlab::data::faces::{parse_size, FaceSize};
use tchlab::eigenfaces::{self, Options};
use tchlab::interrupt::Interrupt;
use tchlab::pca::{Divisor, Method};
use tchlab::report::Terminal;

#[derive(Parser)]
#[command(
    name = "eigenfaces",
    version,
    about = "PCA of a face set written on libtorch: eigenvalues, eigenfaces, reconstructions, recognition in eigenspace",
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true,
    after_help = "Examples:\n  eigenfaces --input data/faces/lfw_faces.npy --out runs/eigenfaces-lfw\n  \
                  eigenfaces --input q3.npy --size 48x42 --divide-by n        # (N, 2016) rows of 48x42 faces\n  \
                  eigenfaces --input att_faces/ --out runs/att                # s1..s40 subfolders: recognition too\n  \
                  eigenfaces project --components runs/att/components.safetensors face.pgm --json\n\n\
                  Writes eigenvalues.csv, summary.json, components.safetensors, eigenvalues.png, eigenfaces.png,\n\
                  reconstructions.png (and recognition.csv, accuracy_vs_k.png for one subfolder per person) to --out."
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    fit: FitArgs,
}

#[derive(Subcommand)]
enum Command {
    /// Coordinates of new face images in a saved eigenspace, and how well it rebuilds them.
    Project(ProjectArgs),
}

/// The floating-point type of the PCA.
#[derive(Clone, Copy, ValueEnum)]
enum Precision {
    F64,
    F32,
}

fn fraction(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(x) if x > 0.0 && x < 1.0 => Ok(x),
        _ => Err("expected a number between 0 and 1, such as 0.3".into()),
    }
}

fn grid(s: &str) -> Result<(usize, usize), String> {
    let size = parse_size(s).map_err(|_| "expected RxC, rows by columns, such as 2x5".to_owned())?;
    if size.pixels() < 2 || size.pixels() > 400 {
        return Err("a grid of 2 to 400 tiles (the mean takes the first)".into());
    }
    Ok((size.height as usize, size.width as usize))
}

fn count(s: &str) -> Result<i64, String> {
    match s.trim().parse::<i64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err("expected a whole number of at least 1".into()),
    }
}

#[derive(Args)]
struct FitArgs {
    /// Faces: a .npy array (N, h, w) or (N, h·w), uint8 or float; or a folder of images, flat or one subfolder per person.
    #[arg(long, value_name = "PATH", required = true)]
    input: Option<PathBuf>,
    /// Folder for the results [default: runs/eigenfaces, or the next free runs/eigenfaces-N].
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// Replace the run in --out (once this one has computed its results).
    #[arg(long)]
    overwrite: bool,
    /// Image size HxW (height by width): the shape of (N, h·w) rows, or what folder images are resized to
    /// [default: rows: the nearest-to-square portrait shape; folders: the most common size].
    #[arg(long, value_name = "HxW", value_parser = parse_size)]
    size: Option<FaceSize>,
    /// What the covariance is divided by: n-1 (scikit-learn's PCA, numpy.cov) or n (then the mean squared
    /// reconstruction error is exactly the sum of the discarded eigenvalues).
    #[arg(long, value_enum, default_value = "n-1")]
    divide_by: Divisor,
    /// Which matrix to decompose: auto (the N×N Gram matrix when N < pixels, else the covariance), gram or covariance.
    #[arg(long, value_enum, default_value = "auto")]
    method: Method,
    /// The floating-point type of the PCA: f64, or f32 (half the memory, less exact).
    #[arg(long, value_enum, default_value = "f64")]
    precision: Precision,
    /// Rows and columns of eigenfaces.png: the mean face, then eigenfaces 1, 2, …
    #[arg(long, value_name = "RxC", default_value = "2x5", value_parser = grid)]
    grid: (usize, usize),
    /// Skip the PNG figures and the measured reconstruction errors: eigenvalues, counts and components only.
    #[arg(long)]
    no_figures: bool,
    /// Recognition (one subfolder per person): the share of each person's faces held out for testing.
    #[arg(long, value_name = "F", default_value_t = 0.3, value_parser = fraction)]
    test_fraction: f64,
    #[command(flatten)]
    seed: tchlab::cli::SeedArg,
    #[command(flatten)]
    threads: tchlab::cli::ThreadsArg,
    #[command(flatten)]
    device: tchlab::device::DeviceArg,
}

#[derive(Args)]
struct ProjectArgs {
    /// components.safetensors written by an eigenfaces run.
    #[arg(long, value_name = "FILE")]
    components: PathBuf,
    /// Face images (grey or colour, any size: resized to the components' size).
    #[arg(required = true, value_name = "IMAGE")]
    images: Vec<PathBuf>,
    /// Components to project onto [default: all saved].
    #[arg(long, value_name = "K", value_parser = count)]
    k: Option<i64>,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    threads: tchlab::cli::ThreadsArg,
}

fn fit(args: FitArgs, interrupt: &Interrupt) -> Result<()> {
    args.threads.apply();
    let device = args.device.select()?;
    let Some(input) = args.input.clone() else {
        anyhow::bail!("--input PATH is required (a .npy file or a folder of faces)")
    };
    let out = tchlab::run_dir::choose(args.out.as_deref(), "runs/eigenfaces", args.overwrite, &Terminal)?;
    tchlab::run_dir::check(&out, tchlab::run_dir::Start::Fresh, args.overwrite)?;
    Banner { tool: "eigenfaces", device, seed: Some(args.seed.seed), out: Some(&out) }.print();
    let config = serde_json::json!({
        "input": std::path::absolute(&input)?,
        "size": args.size.map(|s| format!("{}x{}", s.height, s.width)),
        "divide_by": args.divide_by.name(),
        "method": args.method.name(),
        "precision": args.precision.to_possible_value().map(|v| v.get_name().to_owned()),
        "grid": format!("{}x{}", args.grid.0, args.grid.1),
        "figures": !args.no_figures,
        "test_fraction": args.test_fraction,
        "seed": args.seed.seed,
        "out": out,
    });
    let faces = eigenfaces::load(&input, args.size, &Terminal)?;
    let options = Options {
        divisor: args.divide_by,
        method: args.method,
        precision: match args.precision {
            Precision::F64 => tch::Kind::Double,
            Precision::F32 => tch::Kind::Float,
        },
        device,
        grid: args.grid,
        figures: !args.no_figures,
        test_fraction: args.test_fraction,
        seed: args.seed.seed,
        out,
        overwrite: args.overwrite,
        config,
    };
    eigenfaces::run(&faces, &options, interrupt, &Terminal).map(|_| ())
}

fn project(args: ProjectArgs) -> Result<()> {
    args.threads.apply();
    Banner { tool: "eigenfaces project", device: tch::Device::Cpu, seed: None, out: None }.print();
    let saved = eigenfaces::read_components(&args.components)?;
    let projections = eigenfaces::project(&saved, &args.images, args.k)?;
    if args.json {
        tchlab::say!("{}", serde_json::to_string_pretty(&projections)?);
    } else {
        eigenfaces::report_projections(&projections, saved.size, &Terminal);
    }
    Ok(())
}

fn main() {
    tchlab::cli::run_main(|| {
        let cli: Cli = tchlab::cli::parse_args();
        match cli.command {
            Some(Command::Project(args)) => project(args),
            None => {
                let interrupt = Interrupt::new();
                tchlab::cli::stop_on_ctrl_c(&interrupt);
                fit(cli.fit, &interrupt)
            }
        }
    });
}

//! Finding 15: the `--help` of every tool and subcommand describes each
//! option and shows, as `[default: …]`, what one that takes a value is
//! without it (as `mnist`'s does: `tests/mnist_cli.rs`).

mod common;
use common::{assert_help_describes_options, caption, eigenfaces, finetune};
use std::process::Command;

fn with(mut cmd: Command, args: &[&str]) -> Command {
    cmd.args(args);
    cmd
}

#[test]
fn every_tool_describes_every_option_and_shows_its_default() {
    for flag in ["--help", "-h"] {
        let options = assert_help_describes_options(with(finetune(), &[flag]), &[]);
        let find = |name: &str| options.iter().find(|(head, _)| head.starts_with(name)).unwrap().1.clone();
        assert!(find("--early-stop").contains("[default: never"), "{options:?}");
        assert_help_describes_options(with(finetune(), &["predict", flag]), &["--checkpoint"]);
        assert_help_describes_options(with(finetune(), &["eval", flag]), &["--checkpoint", "--data"]);
        assert_help_describes_options(
            with(finetune(), &["audit", flag]),
            &["--phash-distance", "--feature-similarity"],
        );
        assert_help_describes_options(with(caption(), &["train", flag]), &[]);
        assert_help_describes_options(with(caption(), &["sample", flag]), &["--checkpoint"]);
        assert_help_describes_options(with(caption(), &["scenes", flag]), &[]);
        let options = assert_help_describes_options(with(eigenfaces(), &[flag]), &["--input"]);
        assert!(options.iter().any(|(head, d)| head.starts_with("--precision") && d.contains("[default: f64]")));
        assert_help_describes_options(with(eigenfaces(), &["project", flag]), &["--components"]);
    }
}

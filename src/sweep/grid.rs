//! The sweep file and the points it crosses: `tool` names the tool every
//! run is (`finetune` unless given; see [`Tool`]), `[base]` holds options
//! every run shares, `[grid]` lists of values for options that vary, and
//! `[recipes]` (optional) named sets of options, crossed with the grid as
//! its first axis (`recipe=staged,seed=0`), each overriding `[base]`. Keys
//! are the tool's option names, and every point is resolved by the tool's
//! own option checks here ([`Tool::resolve`]), so a bad key or value is one
//! line before any run starts. This module reads and names; it starts
//! nothing.
//!
//! Relative paths in it (`data`, `weights`, `models-dir`, `image-dir`) are
//! relative to the sweep file's folder, so the same sweep runs from any
//! working folder.
//!
//! A point's index is stable: the grid's options are taken in the order
//! the tool's `--help` lists them (not the order of the file), the last one
//! varying fastest, and each list in the file's order.

pub use super::tool::plain;
use super::tool::{flag, Tool};
use anyhow::{bail, Context, Result};
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// A sweep file larger than this is refused before it is read.
const MAX_FILE_BYTES: u64 = 1 << 20;
/// A grid crossing to more points than this is refused.
pub const MAX_POINTS: usize = 100_000;
/// Options a sweep decides itself, for every point.
const SWEEP_OWNED: &[(&str, &str)] = &[
    ("out", "the sweep names each run's folder (give finetune sweep --out)"),
    ("overwrite", "a sweep continues or skips earlier runs, it never replaces them"),
    ("resume", "a sweep resumes a partial run itself"),
    ("device", "the sweep gives each run its device (finetune sweep --devices)"),
    ("config", "a sweep file holds the options itself (put them in [base])"),
];
/// The longest run folder name a point may get.
const MAX_NAME_BYTES: usize = 200;

/// One option of the grid and its values.
#[derive(Debug, Clone)]
pub struct Axis {
    /// The option's name as users type it (`batch-size`).
    pub key: String,
    pub values: Vec<toml::Value>,
}

/// One combination of grid values: a run of the sweep.
#[derive(Debug, Clone)]
pub struct Point {
    pub index: usize,
    /// (option name, value) for every grid option, in grid order.
    pub values: Vec<(String, toml::Value)>,
    /// The run folder's name, made of the values (`arch=resnet18,lr=0.01`).
    pub name: String,
    /// The options of the run (base, then the point's values), resolved as
    /// the tool saves them with its run.
    pub config: serde_json::Value,
    /// The epochs the run trains.
    pub epochs: usize,
    /// The options given in the sweep file (base and point) as the tool's
    /// flags, without `--out`.
    pub flags: Vec<String>,
}

impl Point {
    /// `arch=resnet18 lr=0.01`, for messages.
    pub fn label(&self) -> String {
        self.values.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect::<Vec<_>>().join(" ")
    }
}

/// A parsed sweep file: the shared options, the recipes and the grid.
#[derive(Debug, Clone)]
pub struct SweepFile {
    pub path: PathBuf,
    pub tool: Tool,
    pub base: toml::Table,
    /// Each recipe's name and options, in the file's order.
    pub recipes: Vec<(String, toml::Table)>,
    /// The grid's options in `--help` order, after the `recipe` axis when
    /// the file has recipes.
    pub axes: Vec<Axis>,
}

/// The axis the recipes make.
const RECIPE: &str = "recipe";

impl SweepFile {
    pub fn read(path: &Path) -> Result<Self> {
        let name = path.display();
        let size = std::fs::metadata(path).with_context(|| format!("sweep file {name}: cannot read"))?.len();
        if size > MAX_FILE_BYTES {
            bail!("sweep file {name}: {size} bytes, more than a sweep file holds ({MAX_FILE_BYTES} at most)");
        }
        let text = std::fs::read_to_string(path).with_context(|| format!("sweep file {name}: cannot read"))?;
        Self::parse(&text, path)
    }

    /// Parses and checks the text of a sweep file (`path` names it in errors).
    pub fn parse(text: &str, path: &Path) -> Result<Self> {
        let name = path.display();
        let table: toml::Table = toml::from_str(text)
            .map_err(|e| anyhow::anyhow!("sweep file {name}: {}", crate::cli::options_file::one_line(&e)))?;
        let mut base = toml::Table::new();
        let mut grid = None;
        let mut recipes = toml::Table::new();
        let mut tool = Tool::Finetune;
        for (key, value) in table {
            match (key.as_str(), value) {
                ("base", toml::Value::Table(t)) => base = t,
                ("grid", toml::Value::Table(t)) => grid = Some(t),
                ("recipes", toml::Value::Table(t)) => recipes = t,
                ("tool", toml::Value::String(t)) => {
                    tool = Tool::from_name(&t).map_err(|e| anyhow::anyhow!("sweep file {name}: {e}"))?
                }
                ("base" | "grid" | "recipes", _) => bail!("sweep file {name}: {key} must be a table ([{key}])"),
                ("tool", _) => bail!("sweep file {name}: tool must be a name (e.g. tool = \"mnist mlp\")"),
                (other, _) => bail!(
                    "sweep file {name}: unknown key {other:?} (a sweep file has a tool name, a [base], a [grid] and a [recipes] table)"
                ),
            }
        }
        let mut grid =
            grid.with_context(|| format!("sweep file {name}: no [grid] table (e.g. [grid] seed = [0, 1, 2])"))?;
        let folder = path.parent().unwrap_or(Path::new(""));
        resolve_paths(&mut base, folder);
        for (key, value) in grid.iter_mut() {
            if let (true, toml::Value::Array(values)) = (PATH_OPTIONS.contains(&id(key).as_str()), value) {
                values.iter_mut().for_each(|value| resolve_path(value, folder));
            }
        }
        let ids = tool.option_ids();
        check_keys(&base, &ids, tool, &format!("sweep file {name} [base]"))?;
        check_keys(&grid, &ids, tool, &format!("sweep file {name} [grid]"))?;
        if grid.is_empty() {
            bail!("sweep file {name}: [grid] is empty; give at least one option with a list of values (e.g. seed = [0, 1, 2])");
        }
        if let Some(key) = grid.keys().find(|k| base.keys().any(|b| id(b) == id(k))) {
            bail!("sweep file {name}: {key:?} is in both [base] and [grid]; keep it in one");
        }
        let recipes = recipe_list(recipes, &grid, (tool, &ids), folder, &format!("sweep file {name} [recipes]"))?;
        let mut axes = Vec::new();
        if !recipes.is_empty() {
            let names = recipes.iter().map(|(name, _)| toml::Value::String(name.clone())).collect();
            axes.push(Axis { key: RECIPE.to_owned(), values: names });
        }
        for option in &ids {
            if let Some((key, value)) = grid.iter().find(|(k, _)| id(k) == *option) {
                axes.push(axis(key, value, &format!("sweep file {name} [grid]"))?);
            }
        }
        let points = axes.iter().try_fold(1usize, |n, a| n.checked_mul(a.values.len()).filter(|&n| n <= MAX_POINTS));
        if points.is_none() {
            bail!("sweep file {name}: the grid crosses to more than {MAX_POINTS} points");
        }
        Ok(Self { path: path.to_owned(), tool, base, recipes, axes })
    }

    /// The number of points the grid crosses to.
    pub fn len(&self) -> usize {
        self.axes.iter().map(|a| a.values.len()).product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every point, resolved and checked, with its run folder under `out`.
    pub fn points(&self, out: &Path) -> Result<Vec<Point>> {
        let points = (0..self.len()).map(|index| self.point(index, out)).collect::<Result<Vec<_>>>()?;
        let mut names = BTreeSet::new();
        if let Some(twin) = points.iter().find(|p| !names.insert(p.name.as_str())) {
            bail!(
                "sweep file {}: two points get the run folder name {:?}; make the values differ in letters or digits",
                self.path.display(),
                twin.name
            );
        }
        Ok(points)
    }

    fn point(&self, index: usize, out: &Path) -> Result<Point> {
        let values = self.values_at(index);
        let label = values.iter().map(|(k, v)| format!("{k}={}", plain(v))).collect::<Vec<_>>().join(" ");
        let source = format!("sweep file {}, point {index} ({label})", self.path.display());
        let table = self.options_of(&values);
        let name = folder_name(&values);
        if name.len() > MAX_NAME_BYTES {
            bail!(
                "{source}: the run folder name would be {} bytes long (at most {MAX_NAME_BYTES}); use shorter values",
                name.len()
            );
        }
        let config = self.tool.resolve(&self.base, &table, &out.join(&name), &source)?;
        let epochs = Tool::epochs(&config).with_context(|| format!("{source}: the resolved options have no epochs"))?;
        // A recipe may override a base option: each option once, the point's value.
        let base = self.base.iter().filter(|(key, _)| !table.keys().any(|k| id(k) == id(key)));
        let flags = base.chain(table.iter()).flat_map(|(k, v)| flag(k, v)).collect();
        Ok(Point { index, values, name, config, epochs, flags })
    }

    /// The options a point of grid `values` sets: its recipe's, then its
    /// grid values.
    fn options_of(&self, values: &[(String, toml::Value)]) -> toml::Table {
        let mut options = toml::Table::new();
        for (key, value) in values {
            match key == RECIPE {
                true => {
                    let (_, recipe) =
                        self.recipes.iter().find(|(name, _)| value.as_str() == Some(name)).expect("a listed recipe");
                    options.extend(recipe.clone());
                }
                false => {
                    options.insert(key.clone(), value.clone());
                }
            }
        }
        options
    }

    /// The grid values of point `index` (the last axis varies fastest).
    fn values_at(&self, index: usize) -> Vec<(String, toml::Value)> {
        let mut rest = index;
        let mut values: Vec<(String, toml::Value)> = self
            .axes
            .iter()
            .rev()
            .map(|axis| {
                let n = axis.values.len();
                let value = axis.values[rest % n].clone();
                rest /= n;
                (axis.key.clone(), value)
            })
            .collect();
        values.reverse();
        values
    }
}

/// The `[recipes]` table checked: each a table of the tool's recipe
/// options (not how a run is carried out, nor an option of the grid), its
/// name fit for a folder name; relative paths resolved against `folder`.
fn recipe_list(
    recipes: toml::Table,
    grid: &toml::Table,
    (tool, ids): (Tool, &[String]),
    folder: &Path,
    source: &str,
) -> Result<Vec<(String, toml::Table)>> {
    let mut list = Vec::new();
    for (name, options) in recipes {
        let toml::Value::Table(mut options) = options else {
            bail!("{source}: {name} must be a table of options (e.g. {name} = {{ mode = \"full\" }})");
        };
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || ".+-_".contains(c)) {
            bail!("{source}: recipe name {name:?}: use letters, digits and .+-_ (it names run folders)");
        }
        check_keys(&options, ids, tool, &format!("{source} {name}"))?;
        if let Some(key) = options.keys().find(|k| !tool.is_reported(&id(k))) {
            bail!("{source} {name}: {key:?} says how runs are carried out, not a recipe; put it in [base]");
        }
        if let Some(key) = options.keys().find(|k| grid.keys().any(|g| id(g) == id(k))) {
            bail!("{source} {name}: {key:?} is also in [grid]; keep it in one");
        }
        resolve_paths(&mut options, folder);
        list.push((name, options));
    }
    Ok(list)
}

/// Options whose values are paths.
const PATH_OPTIONS: &[&str] = &["data", "labels", "weights", "models_dir", "image_dir", "feature_cache"];
/// Options whose values are paths but for one word (`class-weights auto`).
const PATH_OR_WORD_OPTIONS: &[(&str, &str)] = &[("class_weights", "auto")];

/// Relative paths in `table` made relative to `folder` (the sweep file's),
/// so a sweep runs the same from any working folder.
fn resolve_paths(table: &mut toml::Table, folder: &Path) {
    for (key, value) in table.iter_mut() {
        let word = PATH_OR_WORD_OPTIONS.iter().find(|(option, _)| *option == id(key)).map(|(_, word)| *word);
        let is_word = word.is_some_and(|word| value.as_str() == Some(word));
        if PATH_OPTIONS.contains(&id(key).as_str()) || (word.is_some() && !is_word) {
            resolve_path(value, folder);
        }
    }
}

fn resolve_path(value: &mut toml::Value, folder: &Path) {
    if let toml::Value::String(text) = value {
        if Path::new(text.as_str()).is_relative() {
            *text = folder.join(text.as_str()).display().to_string();
        }
    }
}

/// An option's id as clap and serde name it (`batch_size`).
fn id(key: &str) -> String {
    key.replace('-', "_")
}

/// Refuses keys that are not the tool's options, or that the sweep decides.
fn check_keys(table: &toml::Table, ids: &[String], tool: Tool, source: &str) -> Result<()> {
    for key in table.keys() {
        if let Some((_, why)) = SWEEP_OWNED.iter().find(|(owned, _)| id(key) == *owned) {
            bail!("{source}: key {key:?} cannot be set: {why}");
        }
        if !ids.contains(&id(key)) {
            bail!("{source}: unknown key {key:?} (keys are {}'s option names, e.g. batch-size)", tool.name());
        }
    }
    Ok(())
}

fn axis(key: &str, value: &toml::Value, source: &str) -> Result<Axis> {
    let toml::Value::Array(values) = value else {
        bail!("{source}: {key} = {value}: expected a list of values (e.g. {key} = [{value}])");
    };
    if values.is_empty() {
        bail!("{source}: {key} = []: the list is empty; give at least one value");
    }
    if let Some(bad) = values.iter().find(|v| matches!(v, toml::Value::Array(_) | toml::Value::Table(_))) {
        bail!("{source}: {key}: {bad} is not a single value");
    }
    if let Some((i, v)) = values.iter().enumerate().find(|(i, v)| values[..*i].contains(v)) {
        bail!(
            "{source}: {key}: the value {v} is listed twice (at positions {} and {})",
            values.iter().position(|w| w == v).unwrap_or(0),
            i
        );
    }
    Ok(Axis { key: id(key).replace('_', "-"), values: values.clone() })
}

/// The run folder name of a point: `key=value` pairs joined by commas, any
/// character other than letters, digits and `.+-_` made a `-`.
pub fn folder_name(values: &[(String, toml::Value)]) -> String {
    let pairs: Vec<String> = values
        .iter()
        .map(|(key, value)| {
            let value: String = plain(value)
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() || ".+-_".contains(c) { c } else { '-' })
                .collect();
            format!("{key}={value}")
        })
        .collect();
    pairs.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<SweepFile> {
        SweepFile::parse(text, Path::new("s.toml"))
    }

    fn error(text: &str) -> String {
        let message = format!("{:#}", parse(text).and_then(|f| f.points(Path::new("runs/s")).map(|_| f)).unwrap_err());
        assert!(!message.contains('\n'), "not one line: {message}");
        message
    }

    // The data folder must exist; any folder will do for the grid.
    const FILE: &str = "[base]\ndata = \"/\"\nepochs = 2\nrandom-init = true\n\n[grid]\nseed = [0, 1]\nlr = [0.01, 0.001]\narch = [\"resnet18\", \"efficientnet-lite0\"]\n";

    #[test]
    fn recipes_are_the_first_axis_and_their_options_override_the_base() {
        let text = "[base]\ndata = \"/\"\nepochs = 3\nrandom-init = true\nmode = \"feature-extract\"\n\n\
                    [recipes]\nfe = {}\nstaged = { mode = \"staged\", lr-mult = 100.0, freeze-epochs = 2 }\n\n\
                    [grid]\nseed = [0, 1]\n";
        let file = parse(text).unwrap();
        let points = file.points(Path::new("runs/s")).unwrap();
        let names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["recipe=fe,seed=0", "recipe=fe,seed=1", "recipe=staged,seed=0", "recipe=staged,seed=1"]);
        assert_eq!(points[0].config["mode"], "feature-extract");
        let staged = &points[3].config;
        assert_eq!((staged["mode"].as_str(), staged["lr_mult"].as_f64()), (Some("staged"), Some(100.0)));
        assert_eq!((staged["freeze_epochs"].as_u64(), staged["seed"].as_u64()), (Some(2), Some(1)));
        assert!(points[3].flags.windows(2).any(|w| w == ["--mode", "staged"]), "{:?}", points[3].flags);
        assert_eq!(
            points[3].flags.iter().filter(|f| *f == "--mode").count(),
            1,
            "the recipe's mode replaces the base's"
        );
        assert!(!points[3].flags.iter().any(|f| f.contains("recipe")), "{:?}", points[3].flags);
        assert_eq!(points[3].label(), "recipe=staged seed=1");
    }

    #[test]
    fn bad_recipes_are_refused_in_one_line() {
        let with = |recipes: &str| error(&format!("[base]\ndata = \"/\"\n[recipes]\n{recipes}\n[grid]\nseed = [0]\n"));
        assert!(with("a = 3").contains("[recipes]: a must be a table of options"), "{}", with("a = 3"));
        assert!(with("\"a b\" = {}").contains("recipe name \"a b\": use letters"));
        assert!(with("a = { lr-x = 1 }").contains("[recipes] a: unknown key \"lr-x\""));
        assert!(with("a = { threads = 1 }").contains("\"threads\" says how runs are carried out"));
        assert!(with("a = { seed = 1 }").contains("\"seed\" is also in [grid]"));
        assert!(
            with("a = { mode = \"staged\", epochs = 1 }").contains("--freeze-epochs 1: must be fewer than --epochs 1")
        );
    }

    #[test]
    fn the_grid_crosses_in_option_order_with_the_last_varying_fastest() {
        let file = parse(FILE).unwrap();
        let keys: Vec<&str> = file.axes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["arch", "lr", "seed"], "the order --help lists them, not the file's");
        let points = file.points(Path::new("runs/s")).unwrap();
        assert_eq!(points.len(), 8);
        let names: Vec<&str> = points.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names[0], "arch=resnet18,lr=0.01,seed=0");
        assert_eq!(names[1], "arch=resnet18,lr=0.01,seed=1");
        assert_eq!(names[2], "arch=resnet18,lr=0.001,seed=0");
        assert_eq!(names[7], "arch=efficientnet-lite0,lr=0.001,seed=1");
        let config = &points[5].config;
        assert_eq!(config["arch"], "efficientnet-lite0");
        assert_eq!((config["lr"].as_f64(), config["seed"].as_u64(), points[5].epochs), (Some(0.01), Some(1), 2));
        assert!(config["out"].as_str().unwrap().ends_with("runs/s/arch=efficientnet-lite0,lr=0.01,seed=1"));
        assert_eq!(
            points[5].flags,
            [
                "--data",
                "/",
                "--epochs",
                "2",
                "--random-init",
                "--arch",
                "efficientnet-lite0",
                "--lr",
                "0.01",
                "--seed",
                "1"
            ]
        );
    }

    #[test]
    fn indices_and_names_do_not_depend_on_the_order_of_the_file() {
        let reordered = "[grid]\narch = [\"resnet18\", \"efficientnet-lite0\"]\nlr = [0.01, 0.001]\nseed = [0, 1]\n[base]\ndata = \"/\"\nrandom-init = true\nepochs = 2\n";
        let a = parse(FILE).unwrap().points(Path::new("o")).unwrap();
        let b = parse(reordered).unwrap().points(Path::new("o")).unwrap();
        let names = |p: &[Point]| p.iter().map(|p| (p.index, p.name.clone())).collect::<Vec<_>>();
        assert_eq!(names(&a), names(&b));
    }

    #[test]
    fn a_class_weights_file_starts_from_the_sweep_file_and_auto_stays_a_word() {
        let mut table: toml::Table = toml::from_str("class-weights = \"w.csv\"\ndata = \"d\"").unwrap();
        resolve_paths(&mut table, Path::new("/sweeps"));
        assert_eq!(
            (table["class-weights"].as_str(), table["data"].as_str()),
            (Some("/sweeps/w.csv"), Some("/sweeps/d"))
        );
        let mut table: toml::Table = toml::from_str("class_weights = \"auto\"").unwrap();
        resolve_paths(&mut table, Path::new("/sweeps"));
        assert_eq!(table["class_weights"].as_str(), Some("auto"));
    }

    #[test]
    fn folder_names_keep_only_safe_characters() {
        let values = vec![("data".to_owned(), toml::Value::String("/d/ants & bees".into()))];
        assert_eq!(folder_name(&values), "data=-d-ants---bees");
    }

    #[test]
    fn bad_files_are_one_line_errors_naming_the_key() {
        let cases = [
            ("[base]\nbatch = 4\n[grid]\nseed = [0]", "[base]: unknown key \"batch\""),
            ("[grid]\nlearning-rate = [0.1]", "[grid]: unknown key \"learning-rate\""),
            ("[base]\nrandom-init = true\nlr = \"fast\"\n[grid]\nseed = [0]", "key lr: invalid type: string \"fast\""),
            (
                "[base]\ndata = \"/\"\nrandom-init = true\n[grid]\nlr = [0.1, -1.0]",
                "point 1 (lr=-1.0): --lr -1: must be a positive number",
            ),
            (
                "[base]\ndata = \"/\"\nrandom-init = true\n[grid]\nmode = [\"full\", \"half\"]",
                "point 1 (mode=half): key mode: unknown variant `half`",
            ),
            ("[base]\nrandom-init = true\n[grid]\n", "[grid] is empty"),
            ("[base]\nrandom-init = true\n", "no [grid] table"),
            ("[grid]\nseed = []", "seed = []: the list is empty"),
            ("[grid]\nseed = 3", "seed = 3: expected a list"),
            ("[grid]\nseed = [1, 1]", "the value 1 is listed twice"),
            ("[grid]\nout = [\"a\", \"b\"]", "key \"out\" cannot be set"),
            (
                "[base]\ndevice = \"cpu\"\n[grid]\nseed = [0]",
                "key \"device\" cannot be set: the sweep gives each run its device",
            ),
            ("[base]\nseed = 1\n[grid]\nseed = [0]", "\"seed\" is in both [base] and [grid]"),
            ("[runs]\nx = 1\n[grid]\nseed = [0]", "unknown key \"runs\""),
            ("[grid\nseed = [0]", "sweep file s.toml: "),
        ];
        for (text, expected) in cases {
            let message = error(text);
            assert!(message.contains(expected), "{text:?}: {message}");
            assert!(message.starts_with("sweep file s.toml"), "{message}");
        }
    }

    #[test]
    fn a_grid_past_the_point_limit_is_refused_before_expansion() {
        let values: Vec<String> = (0..400).map(|i| i.to_string()).collect();
        let list = values.join(", ");
        let text = format!("[grid]\nseed = [{list}]\nepochs = [{list}]\n");
        assert!(format!("{:#}", parse(&text).unwrap_err()).contains("more than 100000 points"));
    }
}

//! The one typed format of a `.safetensors` file's metadata (`__metadata__`,
//! a map of strings). A [`Card`] is written one entry per top-level field,
//! strings as they are and other values as JSON, so any safetensors tool can
//! read it, plus [`KIND_KEY`] naming what the file is, so a file of another
//! kind is refused in one line. Files written before that key existed still
//! load through [`Card::legacy`].
//!
//! It owns the encoding and the kind check, nothing else: what the fields
//! mean and which tensors go with them belong to each card's owner, and it
//! must never name a card's fields or know its kinds.

use super::safetensors;
use anyhow::{anyhow, bail, Result};
use serde::de::value::MapDeserializer;
use serde::de::{DeserializeOwned, Deserializer, IntoDeserializer, Visitor};
use serde::Serialize;
use serde_json::Value;
use std::collections::HashMap;
use std::path::Path;
use tch::Tensor;

/// The metadata key whose value is the card's [`Card::KIND`].
pub const KIND_KEY: &str = "tchlab";

/// A struct saved as the metadata of a `.safetensors` file.
pub trait Card: Serialize + DeserializeOwned {
    /// What the file is, in words (`"finetune model"`), written under [`KIND_KEY`].
    const KIND: &'static str;

    /// Refuses a card whose fields read but do not fit together; one line naming `path`.
    fn check(&self, _path: &Path) -> Result<()> {
        Ok(())
    }

    /// The fields of a file written before [`KIND_KEY`] existed, as this
    /// format would write them; `None` when the metadata is no such file.
    fn legacy(_metadata: &HashMap<String, String>) -> Option<HashMap<String, String>> {
        None
    }
}

/// The card as metadata: one entry per field and the kind.
pub fn to_metadata<C: Card>(card: &C) -> Result<HashMap<String, String>> {
    let Value::Object(fields) = serde_json::to_value(card)? else {
        bail!("a {} card is not a struct of fields", C::KIND);
    };
    if fields.contains_key(KIND_KEY) {
        bail!("a {} card has a field named {KIND_KEY}, the kind's key", C::KIND);
    }
    let mut metadata = encode(fields);
    metadata.insert(KIND_KEY.to_owned(), C::KIND.to_owned());
    Ok(metadata)
}

/// The metadata of a JSON object's fields, as [`to_metadata`] writes them
/// (for [`Card::legacy`] of a format that kept its card as one JSON entry).
pub fn json_fields(text: &str) -> Option<HashMap<String, String>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(fields)) => Some(encode(fields)),
        _ => None,
    }
}

/// The card of `path` from its metadata, checked.
pub fn from_metadata<C: Card>(metadata: &HashMap<String, String>, path: &Path) -> Result<C> {
    let legacy;
    let fields = match metadata.get(KIND_KEY) {
        Some(kind) if kind == C::KIND => metadata,
        Some(kind) => bail!(
            "{}: {} {} file, not {} {} file",
            path.display(),
            article(kind),
            kind.escape_debug(),
            article(C::KIND),
            C::KIND
        ),
        None => {
            legacy = C::legacy(metadata).ok_or_else(|| {
                anyhow!("{}: not {} {} file (its metadata names no kind)", path.display(), article(C::KIND), C::KIND)
            })?;
            &legacy
        }
    };
    let card: C = decode(fields).map_err(|e| {
        let field = e.path().to_string();
        let field = if field == "." { String::new() } else { format!(", field {field}") };
        anyhow!("{}: {} metadata{field}: {}", path.display(), C::KIND, e.into_inner())
    })?;
    card.check(path)?;
    Ok(card)
}

/// Writes tensors with the card as metadata (atomically).
pub fn save<C: Card>(path: &Path, tensors: &[(String, Tensor)], card: &C) -> Result<()> {
    safetensors::save(path, tensors, to_metadata(card)?)
}

/// Reads the card of `path` (its header alone).
pub fn read<C: Card>(path: &Path) -> Result<C> {
    from_metadata(&safetensors::read_metadata(path)?, path)
}

fn encode(fields: serde_json::Map<String, Value>) -> HashMap<String, String> {
    fields
        .into_iter()
        .map(|(key, value)| match value {
            Value::String(text) => (key, text),
            other => (key, other.to_string()),
        })
        .collect()
}

fn decode<C: DeserializeOwned>(
    fields: &HashMap<String, String>,
) -> Result<C, serde_path_to_error::Error<serde_json::Error>> {
    let entries = fields.iter().filter(|(key, _)| *key != KIND_KEY).map(|(key, text)| (key.as_str(), Text(text)));
    serde_path_to_error::deserialize(MapDeserializer::<_, serde_json::Error>::new(entries))
}

fn article(kind: &str) -> &'static str {
    if kind.starts_with(['a', 'e', 'i', 'o', 'u']) {
        "an"
    } else {
        "a"
    }
}

/// One metadata value, read as the field's type asks: a string takes the
/// text as it is (so a string field holding `123` or `null` stays a string),
/// anything else parses it as JSON.
struct Text<'a>(&'a str);

impl<'de> IntoDeserializer<'de, serde_json::Error> for Text<'_> {
    type Deserializer = Self;

    fn into_deserializer(self) -> Self {
        self
    }
}

impl<'de> Deserializer<'de> for Text<'_> {
    type Error = serde_json::Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        match serde_json::from_str::<Value>(self.0) {
            Ok(value) => value.deserialize_any(visitor),
            Err(_) => visitor.visit_str(self.0),
        }
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_str(self.0)
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_str(self.0)
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        visitor.visit_str(self.0)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
        if self.0 == "null" {
            visitor.visit_none()
        } else {
            visitor.visit_some(self)
        }
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        visitor.visit_newtype_struct(self)
    }

    /// A unit variant is written as its bare name, others as a JSON object.
    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Self::Error> {
        let value = match serde_json::from_str(self.0) {
            Ok(value @ (Value::Object(_) | Value::String(_))) => value,
            _ => Value::String(self.0.to_owned()),
        };
        value.deserialize_enum(name, variants, visitor)
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 bytes byte_buf unit unit_struct
        seq tuple tuple_struct map struct identifier ignored_any
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename_all = "kebab-case")]
    enum Shape {
        Round,
        Boxed { side: i64 },
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Toy {
        name: String,
        count: i64,
        scale: f64,
        tags: Vec<String>,
        shape: Shape,
        other_shape: Shape,
        note: Option<String>,
    }

    impl Card for Toy {
        const KIND: &'static str = "toy model";

        fn check(&self, path: &Path) -> Result<()> {
            if self.count < 0 {
                bail!("{}: count {} is negative", path.display(), self.count);
            }
            Ok(())
        }

        fn legacy(metadata: &HashMap<String, String>) -> Option<HashMap<String, String>> {
            metadata.get("toy").and_then(|text| json_fields(text))
        }
    }

    #[derive(Debug, Serialize, Deserialize)]
    struct Other {
        faces: i64,
    }

    impl Card for Other {
        const KIND: &'static str = "eigenfaces components";
    }

    fn toy() -> Toy {
        Toy {
            // Strings that read as JSON must stay strings.
            name: "123".into(),
            count: 7,
            scale: 0.1,
            tags: vec!["a".into(), "null".into()],
            shape: Shape::Round,
            other_shape: Shape::Boxed { side: 3 },
            note: Some("true".into()),
        }
    }

    fn one_line(error: anyhow::Error) -> String {
        let text = format!("{error:#}");
        assert!(!text.contains('\n'), "{text}");
        text
    }

    #[test]
    fn a_card_is_one_entry_per_field_and_survives_a_file() {
        let metadata = to_metadata(&toy()).unwrap();
        assert_eq!(metadata[KIND_KEY], "toy model");
        assert_eq!(metadata["name"], "123");
        assert_eq!(metadata["shape"], "round");
        assert_eq!(metadata["other_shape"], r#"{"boxed":{"side":3}}"#);
        assert_eq!(metadata["tags"], r#"["a","null"]"#);
        assert_eq!(from_metadata::<Toy>(&metadata, Path::new("t")).unwrap(), toy());

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.safetensors");
        let tensors = [("w".to_string(), Tensor::ones([2], (tch::Kind::Float, tch::Device::Cpu)))];
        save(&path, &tensors, &toy()).unwrap();
        assert_eq!(read::<Toy>(&path).unwrap(), toy());
        let none = Toy { note: None, ..toy() };
        save(&path, &tensors, &none).unwrap();
        assert_eq!(read::<Toy>(&path).unwrap(), none);
    }

    #[test]
    fn a_file_of_another_kind_is_refused_in_one_line() {
        let metadata = to_metadata(&Other { faces: 3 }).unwrap();
        let error = one_line(from_metadata::<Toy>(&metadata, Path::new("x.safetensors")).unwrap_err());
        assert_eq!(error, "x.safetensors: an eigenfaces components file, not a toy model file");
        let error = one_line(from_metadata::<Other>(&to_metadata(&toy()).unwrap(), Path::new("y")).unwrap_err());
        assert_eq!(error, "y: a toy model file, not an eigenfaces components file");
        let mut strange = metadata;
        strange.insert(KIND_KEY.into(), "two\nlines".into());
        one_line(from_metadata::<Toy>(&strange, Path::new("x")).unwrap_err());
    }

    #[test]
    fn a_file_without_a_kind_reads_its_legacy_form_or_is_refused() {
        let old = HashMap::from([("toy".to_string(), serde_json::to_string(&toy()).unwrap())]);
        assert_eq!(from_metadata::<Toy>(&old, Path::new("t")).unwrap(), toy());
        let error = one_line(from_metadata::<Toy>(&HashMap::new(), Path::new("e.safetensors")).unwrap_err());
        assert_eq!(error, "e.safetensors: not a toy model file (its metadata names no kind)");
    }

    #[test]
    fn a_missing_or_bad_field_is_named_in_one_line() {
        let mut metadata = to_metadata(&toy()).unwrap();
        metadata.remove("scale");
        let error = one_line(from_metadata::<Toy>(&metadata, Path::new("x.safetensors")).unwrap_err());
        assert!(error.starts_with("x.safetensors: toy model metadata") && error.contains("scale"), "{error}");

        let mut metadata = to_metadata(&toy()).unwrap();
        metadata.insert("count".into(), "seven\nor so".into());
        let error = one_line(from_metadata::<Toy>(&metadata, Path::new("x.safetensors")).unwrap_err());
        assert!(error.starts_with("x.safetensors: toy model metadata, field count: invalid type"), "{error}");

        let mut metadata = to_metadata(&toy()).unwrap();
        metadata.insert("count".into(), "-1".into());
        let error = one_line(from_metadata::<Toy>(&metadata, Path::new("x.safetensors")).unwrap_err());
        assert_eq!(error, "x.safetensors: count -1 is negative");
    }

    /// Files written before the kind key, their metadata as the code of the
    /// time wrote it, still read (the cards' own tests cover their fields).
    mod old_files {
        use super::*;
        use crate::caption::model::{CellKind, Dims};
        use crate::caption::saved::{CaptionCard, FeatureSource};
        use crate::data::transforms::Normalization;
        use crate::eigenfaces::ComponentsCard;
        use crate::models::Arch;
        use crate::pca::Divisor;
        use crate::persist::model_card::ModelCard;

        /// Writes a file with this metadata as it is.
        fn file(dir: &tempfile::TempDir, name: &str, metadata: &[(&str, &str)]) -> std::path::PathBuf {
            let path = dir.path().join(name);
            let tensors = [("w".to_string(), Tensor::ones([2], (tch::Kind::Double, tch::Device::Cpu)))];
            let metadata = metadata.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
            safetensors::save(&path, &tensors, metadata).unwrap();
            path
        }

        #[test]
        fn a_model_card_of_loose_keys_reads() {
            let dir = tempfile::tempdir().unwrap();
            let path = file(
                &dir,
                "best_model.safetensors",
                &[
                    ("arch", "resnet18"),
                    ("classes", r#"["ants","bees"]"#),
                    ("normalization", "imagenet"),
                    ("image_size", "160"),
                    ("mode", "feature-extract"),
                    ("epoch", "4"),
                    ("val_acc", "0.9"),
                    ("precision", "bf16"),
                ],
            );
            let card = ModelCard {
                arch: Arch::Resnet18,
                classes: vec!["ants".into(), "bees".into()],
                normalization: Normalization::Imagenet,
                image_size: 160,
                resize: None,
                interpolation: None,
                mode: "feature-extract".into(),
                epoch: 4,
                val_acc: 0.9,
                precision: "bf16".into(),
                multi_label: None,
            };
            assert_eq!(read::<ModelCard>(&path).unwrap(), card);
            let error = one_line(read::<CaptionCard>(&path).unwrap_err());
            assert!(error.ends_with("best_model.safetensors: not a caption model file (its metadata names no kind)"));
        }

        fn caption_card(features: FeatureSource) -> CaptionCard {
            let words = ["<NULL>", "<START>", "<END>", "<UNK>", "cat"];
            CaptionCard {
                dims: Dims::recurrent(4, 3, 5, 5),
                cell: CellKind::Lstm,
                words: words.map(String::from).to_vec(),
                max_words: 16,
                features,
                epoch: 2,
                val_loss: 1.25,
            }
        }

        #[test]
        fn a_caption_card_of_one_json_entry_reads() {
            let dir = tempfile::tempdir().unwrap();
            let fields = r#""dims":{"features":4,"wordvec":3,"hidden":5,"vocabulary":5},"cell":"lstm","words":["<NULL>","<START>","<END>","<UNK>","cat"],"max_words":16"#;
            let backbone = format!(
                r#"{{{fields},"features":{{"backbone":{{"arch":"resnet50","weights":"models/r50.pth"}}}},"epoch":2,"val_loss":1.25}}"#
            );
            let path = file(&dir, "backbone.safetensors", &[("caption_card", &backbone)]);
            let weights = "models/r50.pth".into();
            // A card from before grids reads as pooled features at the published size.
            let shape = crate::caption::features::FeatureShape::Pooled;
            let expected =
                caption_card(FeatureSource::Backbone { arch: Arch::Resnet50, weights, shape, image_size: None });
            assert_eq!(read::<CaptionCard>(&path).unwrap(), expected);

            let course = format!(r#"{{{fields},"features":"course-features","epoch":2,"val_loss":1.25}}"#);
            let path = file(&dir, "course.safetensors", &[("caption_card", &course)]);
            assert_eq!(read::<CaptionCard>(&path).unwrap(), caption_card(FeatureSource::CourseFeatures));
            let error = one_line(read::<ModelCard>(&path).unwrap_err());
            assert!(error.ends_with("course.safetensors: not a finetune model file (its metadata names no kind)"));
        }

        #[test]
        fn eigenfaces_components_of_format_1_read() {
            let dir = tempfile::tempdir().unwrap();
            let old = [
                ("format", "tchlab-eigenfaces-1"),
                ("height", "112"),
                ("width", "92"),
                ("white", "255"),
                ("faces", "400"),
                ("covariance_divisor", "N-1"),
                ("total_variance", "2958123.0918"),
                ("components_95", "189"),
                ("source", "att/: 400 faces of 112x92 pixels"),
            ];
            let path = file(&dir, "components.safetensors", &old);
            let expected = ComponentsCard {
                height: 112,
                width: 92,
                white: 255.0,
                faces: 400,
                covariance_divisor: Divisor::NMinusOne,
                total_variance: 2958123.0918,
                components_95: 189,
                source: "att/: 400 faces of 112x92 pixels".into(),
            };
            assert_eq!(read::<ComponentsCard>(&path).unwrap(), expected);
            let mut other_format = old;
            other_format[0].1 = "tchlab-eigenfaces-2";
            let path = file(&dir, "other.safetensors", &other_format);
            let error = one_line(read::<ComponentsCard>(&path).unwrap_err());
            assert!(
                error.ends_with("other.safetensors: not an eigenfaces components file (its metadata names no kind)")
            );
        }

        #[test]
        fn a_new_file_of_another_kind_names_both() {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("caption.safetensors");
            save(&path, &[], &caption_card(FeatureSource::CourseFeatures)).unwrap();
            let error = one_line(read::<ModelCard>(&path).unwrap_err());
            assert!(error.ends_with("caption.safetensors: a caption model file, not a finetune model file"), "{error}");
        }
    }
}

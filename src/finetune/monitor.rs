//! `--monitor`: the val metric that picks a run's best epoch (the model
//! saved, the summary's epoch) and that `--early-stop` watches. Loss is
//! minimised, the others maximised. Each variant names the score of an
//! epoch's record it reads ([`Monitor::score`], the one place): another
//! metric is a variant, its score name, and the code that scores it.

use super::checkpoint::{VAL_ACC, VAL_BALANCED_ACC, VAL_LOSS, VAL_MACRO_F1};
use super::multi_label::VAL_MAP;
use crate::train::engine::KeepRule;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Monitor {
    /// Val accuracy, highest (the tutorial's).
    #[default]
    #[value(name = "val_acc")]
    ValAcc,
    /// Val macro-F1 (scikit-learn's f1_score average="macro"), highest.
    #[value(name = "val_macro_f1")]
    ValMacroF1,
    /// Val balanced accuracy (the mean recall of the classes), highest.
    #[value(name = "val_balanced_acc")]
    ValBalancedAcc,
    /// Val cross-entropy, lowest.
    #[value(name = "val_loss")]
    ValLoss,
    /// Val mean average precision (multi-label runs, whose default it is), highest.
    #[value(name = "val_map")]
    ValMap,
}

impl Monitor {
    /// The name of the score it reads in an epoch's record (`ema_`-prefixed
    /// for a moving average's).
    pub fn score(self) -> &'static str {
        match self {
            Monitor::ValAcc => VAL_ACC,
            Monitor::ValMacroF1 => VAL_MACRO_F1,
            Monitor::ValBalancedAcc => VAL_BALANCED_ACC,
            Monitor::ValLoss => VAL_LOSS,
            Monitor::ValMap => VAL_MAP,
        }
    }

    /// The engine's rule that keeps the best epoch by this score (the first on ties).
    pub fn keep_rule(self) -> KeepRule {
        match self {
            Monitor::ValLoss => KeepRule::Lowest(self.score()),
            Monitor::ValAcc | Monitor::ValMacroF1 | Monitor::ValBalancedAcc | Monitor::ValMap => {
                KeepRule::Highest(self.score())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::choice_names::Named;
    use clap::ValueEnum;

    #[test]
    fn each_monitor_is_named_as_the_score_it_reads_and_loss_is_minimised() {
        for monitor in Monitor::value_variants() {
            assert_eq!(monitor.name(), monitor.score());
            assert_eq!(serde_json::to_value(monitor).unwrap(), monitor.score());
        }
        assert_eq!(Monitor::ValLoss.keep_rule(), KeepRule::Lowest("val_loss"));
        assert_eq!(Monitor::default().keep_rule(), KeepRule::Highest("val_acc"));
    }
}

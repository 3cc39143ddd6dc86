//! Slurm's compressed host lists (`SLURM_JOB_NODELIST`): `node[01-04,07],gpu7`
//! → `node01 node02 node03 node04 node07 gpu7`, as `scontrol show hostnames`
//! writes them, so a rank finds the job's first node without `scontrol`.

use anyhow::{bail, Context, Result};

/// The most names one list may expand to (a guard against `n[0-999999999]`).
const MAX_NAMES: usize = 1 << 16;

/// Every host name of a Slurm host list, in order. Ranges keep the zero
/// padding of their lower bound (`[08-10]` → `08 09 10`); a name may hold
/// several bracket groups (`r[1-2]n[1-2]` → `r1n1 r1n2 r2n1 r2n2`).
pub fn expand_nodelist(list: &str) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for item in top_level_items(list)? {
        names.extend(expand_item(item).with_context(|| format!("{list:?}: not a Slurm host list"))?);
        if names.len() > MAX_NAMES {
            bail!("{list:?}: more than {MAX_NAMES} host names");
        }
    }
    if names.is_empty() {
        bail!("{list:?}: no host name in this Slurm host list");
    }
    Ok(names)
}

/// The first host name of a Slurm host list: where rank 0 runs under `srun`.
pub fn first_node(list: &str) -> Result<String> {
    Ok(expand_nodelist(list)?.swap_remove(0))
}

/// The list split at the commas outside brackets.
fn top_level_items(list: &str) -> Result<Vec<&str>> {
    let mut items = Vec::new();
    let (mut depth, mut start) = (0usize, 0usize);
    for (at, c) in list.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth = depth.checked_sub(1).with_context(|| format!("{list:?}: unbalanced ']'"))?,
            ',' if depth == 0 => {
                items.push(&list[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    if depth != 0 {
        bail!("{list:?}: unbalanced '['");
    }
    items.push(&list[start..]);
    Ok(items.into_iter().map(str::trim).filter(|item| !item.is_empty()).collect())
}

/// One item (`node[01-02]-ib[1,3]`) as every name it stands for.
fn expand_item(item: &str) -> Result<Vec<String>> {
    let mut names = vec![String::new()];
    let mut rest = item;
    while !rest.is_empty() {
        let (text, group, after) = match rest.find('[') {
            Some(open) => {
                let close = rest[open..].find(']').context("unbalanced '['")? + open;
                (&rest[..open], Some(&rest[open + 1..close]), &rest[close + 1..])
            }
            None => (rest, None, ""),
        };
        names.iter_mut().for_each(|name| name.push_str(text));
        if let Some(group) = group {
            let choices = expand_group(group)?;
            if names.len() * choices.len() > MAX_NAMES {
                bail!("more than {MAX_NAMES} host names");
            }
            names = names.iter().flat_map(|name| choices.iter().map(move |c| format!("{name}{c}"))).collect();
        }
        rest = after;
    }
    Ok(names)
}

/// The inside of one bracket group (`01-04,07`) as its values, in order.
fn expand_group(group: &str) -> Result<Vec<String>> {
    let mut values = Vec::new();
    for part in group.split(',') {
        match part.split_once('-') {
            Some((low, high)) => values.extend(expand_range(low, high)?),
            None => values.push(number(part)?.0),
        }
        if values.len() > MAX_NAMES {
            bail!("more than {MAX_NAMES} host names");
        }
    }
    Ok(values)
}

/// `low-high` as numbers padded to `low`'s width.
fn expand_range(low: &str, high: &str) -> Result<Vec<String>> {
    let (low_text, from) = number(low)?;
    let (_, to) = number(high)?;
    if to < from {
        bail!("range {low}-{high} runs backwards");
    }
    if to - from >= MAX_NAMES as u64 {
        bail!("range {low}-{high}: more than {MAX_NAMES} host names");
    }
    let width = low_text.len();
    Ok((from..=to).map(|n| format!("{n:0width$}")).collect())
}

/// A run of digits, as written and as a number.
fn number(text: &str) -> Result<(String, u64)> {
    let text = text.trim();
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        bail!("{text:?} in a bracket group is not a number");
    }
    let value = text.parse().with_context(|| format!("{text:?} is too large"))?;
    Ok((text.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &str) -> Vec<String> {
        expand_nodelist(list).unwrap()
    }

    #[test]
    fn plain_names_and_lists() {
        assert_eq!(names("node7"), ["node7"]);
        assert_eq!(names("a,b , c"), ["a", "b", "c"]);
        assert_eq!(names("10.0.0.5"), ["10.0.0.5"]);
    }

    #[test]
    fn ranges_keep_zero_padding() {
        assert_eq!(names("node[01-04,07]"), ["node01", "node02", "node03", "node04", "node07"]);
        assert_eq!(names("n[8-10]"), ["n8", "n9", "n10"]);
        assert_eq!(names("n[098-101]"), ["n098", "n099", "n100", "n101"]);
    }

    #[test]
    fn several_items_and_groups() {
        assert_eq!(names("gpu[1-2],cpu[09-10],login"), ["gpu1", "gpu2", "cpu09", "cpu10", "login"]);
        assert_eq!(names("r[1-2]n[1,3]"), ["r1n1", "r1n3", "r2n1", "r2n3"]);
        assert_eq!(names("node[1-2]-ib"), ["node1-ib", "node2-ib"]);
    }

    #[test]
    fn first_node_is_where_rank_zero_runs() {
        assert_eq!(first_node("node[01-04,07]").unwrap(), "node01");
        assert_eq!(first_node("b[3,1],a1").unwrap(), "b3");
    }

    #[test]
    fn malformed_lists_are_refused() {
        for (list, says) in [
            ("", "no host name"),
            ("node[1-2", "unbalanced '['"),
            ("node1-2]", "unbalanced ']'"),
            ("node[2-1]", "runs backwards"),
            ("node[a-b]", "is not a number"),
            ("node[]", "is not a number"),
            ("node[0-99999999]", "more than"),
        ] {
            let error = format!("{:#}", expand_nodelist(list).unwrap_err());
            assert!(error.contains(says), "{list:?}: {error}");
            assert_eq!(error.lines().count(), 1, "{error}");
        }
    }
}

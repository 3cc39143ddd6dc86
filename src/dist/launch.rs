//! Where this process sits in a data-parallel run, read from the variables
//! its launcher set: `RANK`/`WORLD_SIZE`/`LOCAL_RANK`/`MASTER_ADDR`/
//! `MASTER_PORT` (torchrun, `spawn_local_ranks`, or by hand) or, failing
//! those, Slurm's `SLURM_PROCID`/`SLURM_NTASKS`/`SLURM_LOCALID` under `srun`.
//! Without them a run is a single process, exactly as before.

use super::nodelist::first_node;
use anyhow::{bail, Result};

/// The port of the store when neither `MASTER_PORT` nor a Slurm job id gives one (torch's default).
pub const DEFAULT_MASTER_PORT: u16 = 29500;

/// Who started the ranks (for messages and `summary.json`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// `RANK`/`WORLD_SIZE`/… set by hand or by `spawn_local_ranks`.
    Env,
    /// torchrun (`TORCHELASTIC_USE_AGENT_STORE` is set): its agent may host the store.
    Torchrun,
    /// Slurm's `srun`: `SLURM_PROCID`/`SLURM_NTASKS` only.
    Slurm,
}

/// One rank's place in the run and where the rendezvous store is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    pub launcher: Launcher,
    /// This process's rank, `0..world_size`.
    pub rank: usize,
    pub world_size: usize,
    /// The rank among those on this node (which device to take); the rank
    /// itself when the launcher does not say (`LOCAL_RANK`/`SLURM_LOCALID` unset: one node).
    pub local_rank: usize,
    /// The TCPStore's host (rank 0's node, or torchrun's agent).
    pub master_addr: String,
    pub master_port: u16,
    /// Whether this process hosts the TCPStore: rank 0, unless torchrun's
    /// agent hosts it (`TORCHELASTIC_USE_AGENT_STORE=True`; then every rank is a client).
    pub hosts_store: bool,
    /// torchrun's restart count (`TORCHELASTIC_RESTART_COUNT`, else 0): part of
    /// the store prefix, so a restarted group never reads an earlier attempt's keys.
    pub attempt: u32,
}

impl Launch {
    /// The launch this process's environment describes; `None` when it names
    /// no process group (a single process). A bad value is an error naming the variable.
    pub fn from_env() -> Result<Option<Self>> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// As [`Launch::from_env`], reading the variables through `var`.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>> {
        let vars = Vars(&var);
        if vars.get("RANK").is_some() || vars.get("WORLD_SIZE").is_some() {
            return from_torch_vars(&vars).map(Some);
        }
        if vars.get("SLURM_PROCID").is_some() {
            return from_slurm_vars(&vars);
        }
        Ok(None)
    }

    /// The prefix of every key this group writes in the store.
    pub fn store_prefix(&self) -> String {
        format!("tchlab/attempt_{}/", self.attempt)
    }
}

/// The environment, read through a function (tests pass a table).
struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    /// The variable's value; an empty value counts as unset.
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn required(&self, name: &str, needed_by: &str) -> Result<String> {
        match self.get(name) {
            Some(value) => Ok(value),
            None => bail!("{name} is not set, but {needed_by} is (a process group needs both)"),
        }
    }

    fn number(&self, name: &str, value: &str) -> Result<usize> {
        match value.parse::<usize>() {
            Ok(n) => Ok(n),
            Err(_) => bail!("{name}={value:?}: not a whole number"),
        }
    }

    fn port(&self, name: &str, value: &str) -> Result<u16> {
        match value.parse::<u16>() {
            Ok(port) if port > 0 => Ok(port),
            _ => bail!("{name}={value:?}: not a port (1-65535)"),
        }
    }

    /// `TORCHELASTIC_USE_AGENT_STORE`: Python's `True`/`False` (or 1/0).
    fn flag(&self, name: &str) -> Result<bool> {
        match self.get(name).as_deref() {
            None => Ok(false),
            Some("True" | "true" | "1") => Ok(true),
            Some("False" | "false" | "0") => Ok(false),
            Some(other) => bail!("{name}={other:?}: expected True or False"),
        }
    }
}

fn from_torch_vars(vars: &Vars) -> Result<Launch> {
    let rank_text = vars.required("RANK", "WORLD_SIZE")?;
    let world_text = vars.required("WORLD_SIZE", "RANK")?;
    let (rank, world_size) = rank_and_world(vars, ("RANK", &rank_text), ("WORLD_SIZE", &world_text))?;
    let local_rank = match vars.get("LOCAL_RANK") {
        Some(text) => vars.number("LOCAL_RANK", &text)?,
        None => rank,
    };
    let master_addr = vars.required("MASTER_ADDR", "RANK")?;
    let master_port = vars.port("MASTER_PORT", &vars.required("MASTER_PORT", "RANK")?)?;
    let agent_store = vars.flag("TORCHELASTIC_USE_AGENT_STORE")?;
    let attempt = match vars.get("TORCHELASTIC_RESTART_COUNT") {
        Some(text) => vars.number("TORCHELASTIC_RESTART_COUNT", &text)? as u32,
        None => 0,
    };
    let launcher = if vars.get("TORCHELASTIC_USE_AGENT_STORE").is_some() { Launcher::Torchrun } else { Launcher::Env };
    let hosts_store = rank == 0 && !agent_store;
    Ok(Launch { launcher, rank, world_size, local_rank, master_addr, master_port, hosts_store, attempt })
}

/// Slurm sets `SLURM_PROCID`/`SLURM_NTASKS` in every job, also in the batch
/// script's own step, so only a task of an `srun` step (`SLURM_STEP_ID` set)
/// is a rank, and a one-task job (a plain run, a sweep's array task) stays a
/// single process.
fn from_slurm_vars(vars: &Vars) -> Result<Option<Launch>> {
    if vars.get("SLURM_STEP_ID").is_none() && vars.get("SLURM_STEPID").is_none() {
        return Ok(None);
    }
    let rank_text = vars.required("SLURM_PROCID", "SLURM_PROCID")?;
    let world_text = vars.required("SLURM_NTASKS", "SLURM_PROCID")?;
    let (rank, world_size) = rank_and_world(vars, ("SLURM_PROCID", &rank_text), ("SLURM_NTASKS", &world_text))?;
    if world_size == 1 {
        return Ok(None);
    }
    let local_rank = match vars.get("SLURM_LOCALID") {
        Some(text) => vars.number("SLURM_LOCALID", &text)?,
        None => rank,
    };
    let master_addr = match vars.get("MASTER_ADDR") {
        Some(addr) => addr,
        None => slurm_first_node(vars)?,
    };
    let master_port = match vars.get("MASTER_PORT") {
        Some(text) => vars.port("MASTER_PORT", &text)?,
        None => slurm_port(vars)?,
    };
    let hosts_store = rank == 0;
    Ok(Some(Launch {
        launcher: Launcher::Slurm,
        rank,
        world_size,
        local_rank,
        master_addr,
        master_port,
        hosts_store,
        attempt: 0,
    }))
}

/// The rank and world size, checked: world ≥ 1, rank below it.
fn rank_and_world(vars: &Vars, rank: (&str, &str), world: (&str, &str)) -> Result<(usize, usize)> {
    let rank_value = vars.number(rank.0, rank.1)?;
    let world_value = vars.number(world.0, world.1)?;
    if world_value == 0 {
        bail!("{}={:?}: a process group needs at least one rank", world.0, world.1);
    }
    if rank_value >= world_value {
        bail!("{}={:?}: not below {}={}", rank.0, rank.1, world.0, world_value);
    }
    Ok((rank_value, world_value))
}

/// The job's first node (where `srun` puts task 0), from its host list.
fn slurm_first_node(vars: &Vars) -> Result<String> {
    for name in ["SLURM_JOB_NODELIST", "SLURM_NODELIST"] {
        if let Some(list) = vars.get(name) {
            return first_node(&list).map_err(|e| anyhow::anyhow!("{name}: {e:#}"));
        }
    }
    bail!("MASTER_ADDR is not set and neither is SLURM_JOB_NODELIST, to take the job's first node from")
}

/// A port every task of the job derives alike: from the job id, else torch's default.
fn slurm_port(vars: &Vars) -> Result<u16> {
    for name in ["SLURM_JOB_ID", "SLURM_JOBID"] {
        if let Some(text) = vars.get(name) {
            return Ok(port_for_job(vars.number(name, &text)? as u64));
        }
    }
    Ok(DEFAULT_MASTER_PORT)
}

/// `15000 + job id mod 17000`: above the well-known ports, below Linux's
/// ephemeral range (32768…), different for jobs that share a node.
pub fn port_for_job(job_id: u64) -> u16 {
    15000 + (job_id % 17000) as u16
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn launch(pairs: &[(&str, &str)]) -> Result<Option<Launch>> {
        let table: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Launch::from_vars(|name| table.get(name).cloned())
    }

    fn error(pairs: &[(&str, &str)]) -> String {
        let message = format!("{:#}", launch(pairs).unwrap_err());
        assert_eq!(message.lines().count(), 1, "{message}");
        message
    }

    const TORCH: [(&str, &str); 5] =
        [("RANK", "1"), ("WORLD_SIZE", "4"), ("LOCAL_RANK", "1"), ("MASTER_ADDR", "node01"), ("MASTER_PORT", "29400")];

    #[test]
    fn nothing_set_is_a_single_process() {
        assert_eq!(launch(&[]).unwrap(), None);
        assert_eq!(launch(&[("RANK", ""), ("OMP_NUM_THREADS", "1")]).unwrap(), None);
    }

    #[test]
    fn torch_variables() {
        let launch = launch(&TORCH).unwrap().unwrap();
        let expected = Launch {
            launcher: Launcher::Env,
            rank: 1,
            world_size: 4,
            local_rank: 1,
            master_addr: "node01".into(),
            master_port: 29400,
            hosts_store: false,
            attempt: 0,
        };
        assert_eq!(launch, expected);
        assert_eq!(launch.store_prefix(), "tchlab/attempt_0/");
    }

    #[test]
    fn rank_zero_hosts_the_store_unless_torchrun_agent_does() {
        let mut vars = TORCH.to_vec();
        vars[0] = ("RANK", "0");
        assert!(launch(&vars).unwrap().unwrap().hosts_store);
        vars.extend([("TORCHELASTIC_USE_AGENT_STORE", "True"), ("TORCHELASTIC_RESTART_COUNT", "2")]);
        let under_torchrun = launch(&vars).unwrap().unwrap();
        assert!(!under_torchrun.hosts_store);
        assert_eq!(under_torchrun.launcher, Launcher::Torchrun);
        assert_eq!(under_torchrun.store_prefix(), "tchlab/attempt_2/");
        vars.retain(|(k, _)| *k != "TORCHELASTIC_USE_AGENT_STORE");
        vars.push(("TORCHELASTIC_USE_AGENT_STORE", "False"));
        assert!(launch(&vars).unwrap().unwrap().hosts_store);
    }

    #[test]
    fn local_rank_defaults_to_rank() {
        let vars: Vec<_> = TORCH.iter().copied().filter(|(k, _)| *k != "LOCAL_RANK").collect();
        assert_eq!(launch(&vars).unwrap().unwrap().local_rank, 1);
    }

    #[test]
    fn bad_torch_values_name_the_variable() {
        let with = |name: &str, value: &'static str| {
            let mut vars = TORCH.to_vec();
            vars.retain(|(k, _)| *k != name);
            if !value.is_empty() {
                vars.push((TORCH.iter().find(|(k, _)| *k == name).unwrap().0, value));
            }
            error(&vars)
        };
        assert_eq!(with("RANK", "x"), "RANK=\"x\": not a whole number");
        assert_eq!(with("RANK", "4"), "RANK=\"4\": not below WORLD_SIZE=4");
        assert_eq!(with("WORLD_SIZE", "0"), "WORLD_SIZE=\"0\": a process group needs at least one rank");
        assert_eq!(with("WORLD_SIZE", ""), "WORLD_SIZE is not set, but RANK is (a process group needs both)");
        assert_eq!(with("MASTER_PORT", "70000"), "MASTER_PORT=\"70000\": not a port (1-65535)");
        assert_eq!(with("MASTER_ADDR", ""), "MASTER_ADDR is not set, but RANK is (a process group needs both)");
        assert_eq!(with("LOCAL_RANK", "-1"), "LOCAL_RANK=\"-1\": not a whole number");
        let mut vars = TORCH.to_vec();
        vars.push(("TORCHELASTIC_USE_AGENT_STORE", "yes"));
        assert_eq!(error(&vars), "TORCHELASTIC_USE_AGENT_STORE=\"yes\": expected True or False");
        assert_eq!(error(&[("WORLD_SIZE", "2")]), "RANK is not set, but WORLD_SIZE is (a process group needs both)");
    }

    #[test]
    fn slurm_variables() {
        let vars = [
            ("SLURM_PROCID", "5"),
            ("SLURM_STEP_ID", "0"),
            ("SLURM_NTASKS", "8"),
            ("SLURM_LOCALID", "1"),
            ("SLURM_JOB_NODELIST", "gpu[07-10]"),
            ("SLURM_JOB_ID", "123456"),
        ];
        let expected = Launch {
            launcher: Launcher::Slurm,
            rank: 5,
            world_size: 8,
            local_rank: 1,
            master_addr: "gpu07".into(),
            master_port: 15000 + 4456,
            hosts_store: false,
            attempt: 0,
        };
        assert_eq!(launch(&vars).unwrap().unwrap(), expected);
    }

    #[test]
    fn slurm_defers_to_master_variables_and_torch_variables() {
        let mut vars =
            vec![("SLURM_STEP_ID", "0"), ("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2"), ("SLURM_NODELIST", "a,b")];
        let plain = launch(&vars).unwrap().unwrap();
        assert_eq!(
            (plain.master_addr.as_str(), plain.master_port, plain.hosts_store),
            ("a", DEFAULT_MASTER_PORT, true)
        );
        vars.extend([("MASTER_ADDR", "10.0.0.1"), ("MASTER_PORT", "1234")]);
        let set = launch(&vars).unwrap().unwrap();
        assert_eq!((set.master_addr.as_str(), set.master_port), ("10.0.0.1", 1234));
        vars.extend([("RANK", "0"), ("WORLD_SIZE", "3")]);
        assert_eq!(launch(&vars).unwrap().unwrap().launcher, Launcher::Env);
    }

    #[test]
    fn one_slurm_task_and_the_batch_script_are_single_processes() {
        assert_eq!(launch(&[("SLURM_STEP_ID", "0"), ("SLURM_PROCID", "0"), ("SLURM_NTASKS", "1")]).unwrap(), None);
        // sbatch --ntasks=2 sets these in the batch script too; srun adds SLURM_STEP_ID.
        assert_eq!(launch(&[("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2"), ("SLURM_NODELIST", "a")]).unwrap(), None);
    }

    #[test]
    fn bad_slurm_values_name_the_variable() {
        assert_eq!(
            error(&[("SLURM_STEP_ID", "0"), ("SLURM_PROCID", "0")]),
            "SLURM_NTASKS is not set, but SLURM_PROCID is (a process group needs both)"
        );
        assert_eq!(
            error(&[("SLURM_STEP_ID", "0"), ("SLURM_PROCID", "2"), ("SLURM_NTASKS", "2")]),
            "SLURM_PROCID=\"2\": not below SLURM_NTASKS=2"
        );
        assert_eq!(
            error(&[("SLURM_STEP_ID", "0"), ("SLURM_PROCID", "0"), ("SLURM_NTASKS", "2")]),
            "MASTER_ADDR is not set and neither is SLURM_JOB_NODELIST, to take the job's first node from"
        );
        let bad_list = error(&[
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_JOB_NODELIST", "n[1-"),
        ]);
        assert!(bad_list.starts_with("SLURM_JOB_NODELIST: \"n[1-\""), "{bad_list}");
        let bad_id = error(&[
            ("SLURM_STEP_ID", "0"),
            ("SLURM_PROCID", "0"),
            ("SLURM_NTASKS", "2"),
            ("SLURM_NODELIST", "a"),
            ("SLURM_JOB_ID", "12x"),
        ]);
        assert_eq!(bad_id, "SLURM_JOB_ID=\"12x\": not a whole number");
    }

    #[test]
    fn job_ports_stay_below_the_ephemeral_range() {
        assert_eq!(port_for_job(0), 15000);
        assert_eq!(port_for_job(16_999), 31_999);
        assert!(port_for_job(16_999) < 32_768, "Linux's ephemeral ports start at 32768");
        assert_eq!(port_for_job(17_000), 15000);
    }
}

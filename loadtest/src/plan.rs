//! How a run is laid out: which gateway node each session goes to and where its publishes go,
//! how sessions are split over worker processes (each under the per-process file limit) and
//! source addresses (so that ephemeral ports do not run out), and which processes are the
//! gateways to sample.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr},
};

use anyhow::{Context as _, bail, ensure};
use serde::Serialize;

/// Most sessions one worker process opens: one descriptor each, under the 20,000 limit with
/// room for the process's own files.
pub const MAX_SESSIONS_PER_WORKER: usize = 18_000;

/// Most sessions per source address: the ephemeral range (32768–60999 by default) with room for
/// reconnects while closed ports sit in TIME_WAIT.
pub const MAX_SESSIONS_PER_SOURCE_IP: usize = 20_000;

/// The default source addresses.
pub const DEFAULT_SOURCE_IPS: &str = "127.0.0.2-127.0.0.254";

/// How the gateway nodes relate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Independent standalone nodes (each its own store): `--admin` has one entry per `--url`; a
    /// user's durable messages go to the admin API of the node holding the user, broadcasts and
    /// channel messages to every node.
    Standalone,
    /// Nodes of one cluster: any admin API reaches every session; each publish is sent once.
    Cluster,
}

/// The gateway nodes of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Targets {
    pub urls: Vec<String>,
    pub admins: Vec<String>,
    pub mode: Mode,
}

impl Targets {
    pub fn new(urls: Vec<String>, admins: Vec<String>, mode: Mode) -> anyhow::Result<Self> {
        ensure!(!urls.is_empty(), "give at least one --url");
        for url in &urls {
            ensure!(url.starts_with("ws://"), "--url {url}: must start with ws://");
        }
        for admin in &admins {
            ensure!(admin.starts_with("http://"), "--admin {admin}: must start with http://");
        }
        let admins: Vec<String> = admins.into_iter().map(|a| a.trim_end_matches('/').to_owned()).collect();
        ensure!(!admins.is_empty(), "give at least one --admin");
        if mode == Mode::Standalone && admins.len() != urls.len() {
            bail!(
                "standalone nodes need one --admin per --url ({} urls, {} admins); with a cluster, use --mode cluster",
                urls.len(),
                admins.len()
            );
        }
        Ok(Self { urls, admins, mode })
    }

    /// Node of session `g`: round-robin.
    pub fn node_of(&self, session: usize) -> usize {
        session % self.urls.len()
    }

    /// Admin API to publish to a user held on `node`.
    pub fn admin_for_node(&self, node: usize) -> &str {
        &self.admins[node % self.admins.len()]
    }

    /// Admin APIs a broadcast or channel message is sent to, with the node each reaches
    /// (`None`: every node).
    pub fn fanout_admins(&self) -> Vec<(Option<usize>, &str)> {
        match self.mode {
            Mode::Standalone => self.admins.iter().enumerate().map(|(n, a)| (Some(n), a.as_str())).collect(),
            Mode::Cluster => vec![(None, self.admins[0].as_str())],
        }
    }
}

/// Parses `A-B` (an IPv4 range) or `A,B,C`.
pub fn parse_source_ips(spec: &str) -> anyhow::Result<Vec<IpAddr>> {
    let mut out = Vec::new();
    for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if let Some((a, b)) = part.split_once('-') {
            let a: Ipv4Addr = a.trim().parse().with_context(|| format!("{a} is not an IPv4 address"))?;
            let b: Ipv4Addr = b.trim().parse().with_context(|| format!("{b} is not an IPv4 address"))?;
            let (a, b) = (u32::from(a), u32::from(b));
            ensure!(a <= b, "source range {part} is backwards");
            ensure!(b - a < 65_536, "source range {part} is too large");
            out.extend((a..=b).map(|ip| IpAddr::V4(Ipv4Addr::from(ip))));
        } else {
            out.push(part.parse().with_context(|| format!("{part} is not an IP address"))?);
        }
    }
    ensure!(!out.is_empty(), "no source addresses in {spec:?}");
    Ok(out)
}

/// One worker process's share.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct WorkerPlan {
    pub index: usize,
    /// Global indices `first .. first + count`.
    pub first: usize,
    pub count: usize,
    pub source_ips: Vec<IpAddr>,
}

/// Splits `sessions` over worker processes and source addresses. Without a worker count, it
/// uses as few as the file limit allows, and at least 2 (so the load client has both cores).
pub fn plan_workers(sessions: usize, workers: Option<usize>, ips: &[IpAddr]) -> anyhow::Result<Vec<WorkerPlan>> {
    ensure!(!ips.is_empty(), "no source addresses");
    if sessions == 0 {
        return Ok(Vec::new());
    }
    let needed = sessions.div_ceil(MAX_SESSIONS_PER_WORKER);
    let workers = match workers {
        Some(0) => bail!("--workers must be at least 1"),
        Some(w) => {
            ensure!(
                w >= needed,
                "{sessions} sessions need at least {needed} workers ({MAX_SESSIONS_PER_WORKER} sessions per process, under the 20,000 open-file limit)"
            );
            w.min(sessions)
        }
        None => needed.max(2).min(sessions),
    };
    let mut plans = Vec::with_capacity(workers);
    let mut first = 0;
    for index in 0..workers {
        let count = sessions / workers + usize::from(index < sessions % workers);
        let source_ips: Vec<IpAddr> = if workers <= ips.len() {
            ips.iter().skip(index).step_by(workers).copied().collect()
        } else {
            vec![ips[index % ips.len()]]
        };
        // Workers sharing an address (more workers than addresses) share its ports.
        let sharing = if workers > ips.len() { workers.div_ceil(ips.len()) } else { 1 };
        let per_ip = count.div_ceil(source_ips.len()) * sharing;
        ensure!(
            per_ip <= MAX_SESSIONS_PER_SOURCE_IP,
            "{per_ip} sessions per source address (worker {index}); give more addresses with --source-ips (at most {MAX_SESSIONS_PER_SOURCE_IP} each)"
        );
        plans.push(WorkerPlan { index, first, count, source_ips });
        first += count;
    }
    Ok(plans)
}

/// A gateway process to sample.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GatewayProc {
    pub pid: u32,
    /// Which node it is (the client URLs it listens on), or `pid N`.
    pub label: String,
}

/// Socket inodes of listening TCP sockets in a `/proc/net/tcp{,6}` table, by local port.
pub fn listening_inodes(table: &str) -> BTreeMap<u16, BTreeSet<u64>> {
    let mut out: BTreeMap<u16, BTreeSet<u64>> = BTreeMap::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        // sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
        let (Some(local), Some(state), Some(inode)) = (fields.get(1), fields.get(3), fields.get(9)) else { continue };
        if *state != "0A" {
            continue;
        }
        let Some(port) = local.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok()) else { continue };
        if let Ok(inode) = inode.parse::<u64>()
            && inode != 0
        {
            out.entry(port).or_default().insert(inode);
        }
    }
    out
}

fn system_listeners() -> BTreeMap<u16, BTreeSet<u64>> {
    let mut all = BTreeMap::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            for (port, inodes) in listening_inodes(&text) {
                all.entry(port).or_insert_with(BTreeSet::new).extend(inodes);
            }
        }
    }
    all
}

/// Socket inodes a process holds.
fn socket_inodes(pid: u32) -> BTreeSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else { return BTreeSet::new() };
    dir.flatten()
        .filter_map(|e| std::fs::read_link(e.path()).ok())
        .filter_map(|link| {
            let s = link.to_string_lossy().into_owned();
            s.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

fn url_port(url: &str) -> Option<u16> {
    let rest = url.split_once("://")?.1;
    let host_port = rest.split('/').next()?;
    host_port.rsplit_once(':')?.1.parse().ok()
}

/// The gateway processes: explicit pids, or `auto` — the processes listening on the `--url`
/// ports. Each is labelled with the client URLs it serves.
pub fn gateway_processes(specs: &[String], urls: &[String]) -> anyhow::Result<Vec<GatewayProc>> {
    let listeners = system_listeners();
    let label_of = |pid: u32| {
        let mine = socket_inodes(pid);
        let served: Vec<&str> = urls
            .iter()
            .filter(|u| url_port(u).and_then(|p| listeners.get(&p)).is_some_and(|inodes| !inodes.is_disjoint(&mine)))
            .map(String::as_str)
            .collect();
        if served.is_empty() { format!("pid {pid}") } else { format!("{} (pid {pid})", served.join(" ")) }
    };
    let mut pids = BTreeSet::new();
    for spec in specs.iter().map(|s| s.trim()).filter(|s| !s.is_empty()) {
        if spec == "auto" {
            let wanted: BTreeSet<u64> = urls
                .iter()
                .filter_map(|u| url_port(u))
                .filter_map(|p| listeners.get(&p))
                .flat_map(|s| s.iter().copied())
                .collect();
            ensure!(!wanted.is_empty(), "--gateway-pid auto: nothing listens on the --url ports");
            let mut found = false;
            for entry in std::fs::read_dir("/proc")?.flatten() {
                let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
                if pid != std::process::id() && !socket_inodes(pid).is_disjoint(&wanted) {
                    pids.insert(pid);
                    found = true;
                }
            }
            ensure!(found, "--gateway-pid auto: no process found holding the listening sockets (permissions?)");
        } else {
            let pid: u32 = spec.parse().with_context(|| format!("--gateway-pid {spec}: not a pid or `auto`"))?;
            ensure!(crate::stats::alive(pid), "--gateway-pid {pid}: no such process");
            pids.insert(pid);
        }
    }
    Ok(pids.into_iter().map(|pid| GatewayProc { pid, label: label_of(pid) }).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ips(n: u8) -> Vec<IpAddr> {
        (0..n).map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + i))).collect()
    }

    #[test]
    fn source_ranges_and_lists_parse() {
        let all = parse_source_ips(DEFAULT_SOURCE_IPS).unwrap();
        assert_eq!(all.len(), 253);
        assert_eq!(all[0], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)));
        assert_eq!(all[252], IpAddr::V4(Ipv4Addr::new(127, 0, 0, 254)));
        assert_eq!(parse_source_ips("127.0.0.5, 127.0.0.9").unwrap().len(), 2);
        assert!(parse_source_ips("127.0.0.9-127.0.0.5").is_err());
        assert!(parse_source_ips("nope").is_err());
        assert!(parse_source_ips("").is_err());
    }

    #[test]
    fn sessions_split_evenly_under_the_file_limit() {
        let plans = plan_workers(100_000, None, &ips(253)).unwrap();
        assert_eq!(plans.len(), 6);
        assert!(plans.iter().all(|p| p.count <= MAX_SESSIONS_PER_WORKER));
        assert_eq!(plans.iter().map(|p| p.count).sum::<usize>(), 100_000);
        assert!(plans.windows(2).all(|w| w[0].first + w[0].count == w[1].first));
        // Addresses are dealt out, none shared.
        let used: BTreeSet<IpAddr> = plans.iter().flat_map(|p| p.source_ips.iter().copied()).collect();
        assert_eq!(used.len(), 253);
        assert_eq!(plans.iter().map(|p| p.source_ips.len()).sum::<usize>(), 253);
        // Small runs still use two processes; tiny ones one per session.
        assert_eq!(plan_workers(10, None, &ips(253)).unwrap().len(), 2);
        assert_eq!(plan_workers(1, None, &ips(253)).unwrap().len(), 1);
        assert!(plan_workers(0, None, &ips(1)).unwrap().is_empty());
    }

    #[test]
    fn too_few_workers_or_addresses_are_refused() {
        assert!(plan_workers(40_000, Some(2), &ips(253)).is_err());
        assert!(plan_workers(40_000, Some(3), &ips(253)).is_ok());
        assert!(plan_workers(10, Some(0), &ips(1)).is_err());
        // 36,000 sessions from one address: not enough ports.
        assert!(plan_workers(36_000, Some(2), &ips(1)).is_err());
        assert!(plan_workers(36_000, Some(2), &ips(2)).is_ok());
        assert!(plan_workers(10, None, &[]).is_err());
    }

    #[test]
    fn standalone_nodes_pair_urls_with_admins() {
        let urls = vec!["ws://127.0.0.1:1/ws".to_owned(), "ws://127.0.0.1:2/ws".to_owned()];
        let admins = vec!["http://127.0.0.1:11/".to_owned(), "http://127.0.0.1:12".to_owned()];
        let t = Targets::new(urls.clone(), admins.clone(), Mode::Standalone).unwrap();
        assert_eq!((t.node_of(0), t.node_of(3)), (0, 1));
        assert_eq!(t.admin_for_node(0), "http://127.0.0.1:11");
        assert_eq!(t.fanout_admins().len(), 2);
        assert!(Targets::new(urls.clone(), admins[..1].to_vec(), Mode::Standalone).is_err());
        let c = Targets::new(urls.clone(), admins[..1].to_vec(), Mode::Cluster).unwrap();
        assert_eq!(c.admin_for_node(1), "http://127.0.0.1:11");
        assert_eq!(c.fanout_admins(), vec![(None, "http://127.0.0.1:11")]);
        assert!(Targets::new(vec!["http://x".into()], admins[..1].to_vec(), Mode::Cluster).is_err());
        assert!(Targets::new(vec![], vec![], Mode::Cluster).is_err());
    }

    #[test]
    fn listening_sockets_are_found_in_proc_net_tcp() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F90 0200007F:9C40 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:2382 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 100 0 0 10 0
";
        let l = listening_inodes(table);
        assert_eq!(l.get(&8080).unwrap().iter().copied().collect::<Vec<_>>(), vec![4242]);
        assert_eq!(l.get(&9090).unwrap().len(), 1);
        assert_eq!(l.len(), 2);
        assert_eq!(url_port("ws://127.0.0.1:8080/ws"), Some(8080));
        assert_eq!(url_port("ws://127.0.0.1/ws"), None);
    }

    #[test]
    fn this_process_can_be_named_by_pid() {
        let me = std::process::id().to_string();
        let found = gateway_processes(&[me], &[]).unwrap();
        assert_eq!(found[0].pid, std::process::id());
        assert!(gateway_processes(&["x".into()], &[]).is_err());
        assert!(gateway_processes(&["4294967295".into()], &[]).is_err());
    }
}

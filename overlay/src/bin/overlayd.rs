//! `overlayd`: the flannel-style UDP overlay daemon on its own, for a real host
//! or any network namespace it is started in.
//!
//! ```text
//! overlayd --public-ip 192.168.96.2 --network 10.244.0.0/16 --subnet 10.244.1.0/24 \
//!          --leases-dir /var/lib/overlay --create
//! ```
//!
//! Leases are read every 200 ms from `--leases-dir`, in flannel's layout: one
//! file `subnets/<net>-<len>` per node holding
//! `{"PublicIP": "...", "BackendType": "udp", "BackendData": null}`. A file
//! that cannot be read is skipped (and reported in the stats); the lease it
//! last held stays until it is readable again or removed.
//!
//! The exit status is 2 for bad input (a flag clap refuses, a subnet
//! outside the network), and 1 when the data path failed or any thread
//! panicked, so that a supervisor starts the daemon again.

use clap::Parser;
use overlay::daemon::{self, DaemonConfig};
use overlay::{registry, Ipv4Net};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

/// The flannel-style UDP overlay daemon: IP packets from a TUN device, one per
/// UDP datagram, to the node that leases their destination's subnet.
#[derive(Parser, Debug)]
#[command(name = "overlayd", version)]
struct Args {
    /// The TUN device (persistent, multi-queue; see --create).
    #[arg(long, default_value = "flannel0")]
    tun: String,
    /// This node's public (underlay) address, which the UDP socket binds.
    #[arg(long, value_name = "IP")]
    public_ip: Ipv4Addr,
    /// The UDP port, here and on every other node.
    #[arg(long, default_value_t = daemon::DEFAULT_PORT)]
    port: u16,
    /// The overlay network (podCIDR).
    #[arg(long, value_name = "CIDR")]
    network: Ipv4Net,
    /// This node's own subnet (its lease).
    #[arg(long, value_name = "CIDR")]
    subnet: Ipv4Net,
    /// A directory of flannel-layout lease files, `subnets/<net>-<len>`.
    #[arg(long, value_name = "DIR")]
    leases_dir: Option<PathBuf>,
    /// Write the counters as JSON to this file every 500 ms.
    #[arg(long, value_name = "FILE")]
    stats: Option<PathBuf>,
    /// Impairments, `{"egress": {...}, "ingress": {...}}`, re-read when changed.
    #[arg(long, value_name = "FILE")]
    impair: Option<PathBuf>,
    /// Seed of the impairment engines (egress stream 0, ingress stream 1).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Worker thread pairs (TUN queues); 0 = one per CPU.
    #[arg(long, default_value_t = 0)]
    workers: usize,
    /// Create the TUN device if it does not exist (and remove it on exit if
    /// this run created it). Its address, MTU and routes are set by whoever
    /// runs the daemon (e.g. `ip addr add 10.244.1.0/32 dev flannel0; ip link
    /// set flannel0 mtu 1472 up; ip route add 10.244.0.0/16 dev flannel0`).
    #[arg(long)]
    create: bool,
    /// Plain packets: no TUN segmentation/checksum offload, UDP GSO or GRO.
    #[arg(long)]
    no_offload: bool,
    /// More logging (-v debug, -vv trace).
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
}

/// The daemon's lease source: the udp leases of the file registry at `dir`
/// as it is (`registry::FileStore::reading`: `dir/subnets` when it exists,
/// else `dir`; without expiry: the files are the truth), a file that cannot
/// be read skipped and reported, the lease it last held kept.
fn lease_source(dir: Option<PathBuf>) -> daemon::LeaseSource {
    let store = dir.map(registry::FileStore::reading);
    Box::new(registry::udp_leases(move || match &store {
        Some(s) => registry::SubnetStore::scan(s),
        None => Ok(registry::LeaseScan::default()),
    }))
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

fn main() {
    let args = Args::parse();
    let level = match args.verbose {
        0 => tracing::Level::INFO,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    std::process::exit(match run(args) {
        Ok(()) => 0,
        Err(Failure::BadInput(e)) => {
            eprintln!("overlayd: {e}");
            2
        }
        Err(Failure::Runtime(e)) => {
            eprintln!("overlayd: {e}");
            1
        }
    });
}

/// Why the daemon did not run (or stopped): what to exit with.
enum Failure {
    /// The command line asks for something impossible (exit 2).
    BadInput(String),
    /// The daemon could not start, or its data path failed (exit 1).
    Runtime(String),
}

fn run(args: Args) -> Result<(), Failure> {
    if !args.network.covers(&args.subnet) {
        return Err(Failure::BadInput(format!(
            "--subnet {} is not inside --network {}",
            args.subnet, args.network
        )));
    }
    let created = args.create && !overlay::tun::exists(&args.tun);
    if created {
        overlay::tun::create_persistent(&args.tun)
            .map_err(|e| Failure::Runtime(format!("creating TUN device {}: {e}", args.tun)))?;
        tracing::info!("created TUN device {}", args.tun);
    }
    for sig in [libc::SIGINT, libc::SIGTERM] {
        // SAFETY: the handler only stores to an atomic.
        unsafe { libc::signal(sig, on_signal as *const () as libc::sighandler_t) };
    }
    daemon::install_panic_backstop(&STOP);
    let cfg = DaemonConfig {
        tun: args.tun.clone(),
        bind: SocketAddrV4::new(args.public_ip, args.port),
        network: args.network,
        own_subnet: args.subnet,
        leases: lease_source(args.leases_dir.clone()),
        impair_egress: Some((Default::default(), args.seed, 0)),
        impair_ingress: Some((Default::default(), args.seed, 1)),
        impair_file: args.impair,
        stats_file: args.stats,
        workers: args.workers,
    };
    tracing::info!(
        "serving {} on {}:{} for {} in {}",
        args.tun,
        args.public_ip,
        args.port,
        args.subnet,
        args.network
    );
    let stats = std::sync::Arc::new(overlay::stats::Stats::new(2 * 64 + 3));
    let opts = daemon::RunOptions {
        offload: !args.no_offload && daemon::RunOptions::default().offload,
    };
    let result = match daemon::run_with_options(cfg, &STOP, stats, opts) {
        Ok(()) if daemon::panicked() => Err(Failure::Runtime(
            "a thread panicked (see above)".to_string(),
        )),
        r => r.map_err(|e| Failure::Runtime(e.to_string())),
    };
    if created {
        if let Err(e) = overlay::tun::delete_persistent(&args.tun) {
            tracing::warn!("removing TUN device {}: {e}", args.tun);
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_flannel_lease_files() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let sub = dir.join("subnets");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(
            sub.join("10.244.1.0-24"),
            r#"{"PublicIP":"192.168.96.2","BackendType":"udp","BackendData":null}"#,
        )
        .unwrap();
        std::fs::write(
            sub.join("10.244.2.0-24"),
            r#"{"PublicIP":"192.168.96.3","BackendType":"vxlan","BackendData":{"VNI":1}}"#,
        )
        .unwrap();
        std::fs::write(sub.join("10.244.4.0-24"), r#"{"PublicIP":"192.168.96.4"}"#).unwrap();
        std::fs::write(sub.join("10.244.3.0-24"), "not json").unwrap();
        std::fs::write(sub.join("junk"), "{}").unwrap();
        let set = lease_source(Some(dir.to_path_buf()))();
        assert_eq!(
            set.leases,
            vec![
                (
                    "10.244.1.0/24".parse().unwrap(),
                    Ipv4Addr::new(192, 168, 96, 2)
                ),
                (
                    "10.244.4.0/24".parse().unwrap(),
                    Ipv4Addr::new(192, 168, 96, 4)
                )
            ]
        );
        assert_eq!(set.bad.len(), 1);
        assert!(set.bad[0].file.ends_with("10.244.3.0-24"));
    }
}

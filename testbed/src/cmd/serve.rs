//! `testbed serve`: the small servers of `traffic::serve`, for a container
//! command (`command: [testbed, serve, --http, "80"]`), and the hidden
//! `testbed generate`: one generator from a namespace, its samples printed
//! as JSON lines (what `bench/traffic.py` measures).

use crate::Failure;
use anyhow::Context;
use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};
use testbed::experiment::schedule::Sends;
use testbed::experiment::WorkloadKind;
use testbed::traffic::serve::{self, ServeConfig, ServeError, Server};
use testbed::traffic::{self, Generator};

/// `testbed serve`'s arguments.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Answer HTTP GETs on this port (header X-Testbed-Pod and body `pod NAME`;
    /// `/status/NNN` answers with that status).
    #[arg(long, value_name = "PORT")]
    http: Option<u16>,
    /// Accept TCP connections on this port, greeting with `pod NAME`.
    #[arg(long, value_name = "PORT")]
    tcp: Option<u16>,
    /// Echo UDP datagrams on this port, with `pod NAME` appended.
    #[arg(long, value_name = "PORT")]
    udp: Option<u16>,
    /// Stream bytes to every connection on this port (`pod NAME`, then 1 KiB
    /// every 10 ms).
    #[arg(long, value_name = "PORT")]
    stream: Option<u16>,
    /// The name answers give (default: $TESTBED_POD, which the testbed sets
    /// in every container, else the hostname).
    #[arg(long)]
    name: Option<String>,
    /// The address to listen on.
    #[arg(long, default_value = "0.0.0.0")]
    bind: Ipv4Addr,
}

/// Runs `testbed serve` until it is killed.
pub fn serve(args: ServeArgs) -> Result<(), Failure> {
    let config = ServeConfig {
        name: args.name.unwrap_or_else(serve::default_name),
        bind: args.bind,
        http: args.http,
        tcp: args.tcp,
        udp: args.udp,
        stream: args.stream,
    };
    let server = match Server::bind(&config) {
        Ok(s) => s,
        Err(e @ (ServeError::Name(_) | ServeError::NoPorts)) => {
            eprintln!("error: {e}");
            return Err(Failure::BadInput);
        }
        Err(e) => return Err(anyhow::Error::new(e).into()),
    };
    for line in server.describe().lines() {
        println!("testbed serve: {} {line}", config.name);
    }
    let _ = std::io::stdout().flush();
    static NEVER: AtomicBool = AtomicBool::new(false);
    server.run(&NEVER).context("testbed serve")?;
    Ok(())
}

/// `testbed generate`'s arguments.
#[derive(clap::Args)]
pub struct GenerateArgs {
    /// The network namespace to send from (a name under /run/netns).
    #[arg(long)]
    netns: String,
    /// http, tcpConnect, tcpStream, udpEcho or ping.
    #[arg(long)]
    kind: String,
    /// The address to send to.
    #[arg(long)]
    to: Ipv4Addr,
    /// The port (0 for ping).
    #[arg(long, default_value_t = 0)]
    port: u16,
    /// The HTTP path.
    #[arg(long, default_value = "/")]
    path: String,
    /// Sends per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 1)]
    seconds: u64,
    /// The timeout of one send, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    timeout_ms: u64,
    /// tcpStream: how many streams.
    #[arg(long, default_value_t = 1)]
    streams: u32,
}

/// Runs one generator and prints its samples, one JSON object a line.
pub fn generate(args: GenerateArgs) -> Result<(), Failure> {
    let kind = match args.kind.as_str() {
        "http" => WorkloadKind::Http,
        "tcpConnect" => WorkloadKind::TcpConnect,
        "tcpStream" => WorkloadKind::TcpStream,
        "udpEcho" => WorkloadKind::UdpEcho,
        "ping" => WorkloadKind::Ping,
        other => {
            eprintln!("error: --kind {other:?}: http, tcpConnect, tcpStream, udpEcho or ping");
            return Err(Failure::BadInput);
        }
    };
    if !traffic::valid_netns(&args.netns) {
        eprintln!(
            "error: --netns {:?} is not a network namespace's name",
            args.netns
        );
        return Err(Failure::BadInput);
    }
    if args.rate == 0 {
        eprintln!("error: --rate must be at least 1");
        return Err(Failure::BadInput);
    }
    let gen = Generator {
        workload: "generate".into(),
        kind,
        source: format!("netns {}", args.netns),
        netns: args.netns,
        addr: args.to,
        port: args.port,
        path: args.path,
        sends: Sends {
            name: "generate".into(),
            count: u64::from(args.rate) * args.seconds,
            start_us: 0,
            first_us: Vec::new(),
            rate: args.rate,
            phase_ppm: 0,
        },
        timeout: Duration::from_millis(args.timeout_ms),
        streams: args.streams,
    };
    let stop = AtomicBool::new(false);
    // A little time to set up before the first send.
    let t0 = Instant::now() + Duration::from_millis(50);
    let samples = traffic::run(&gen, t0, &stop).context("generate")?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for s in &samples {
        let line = serde_json::to_string(s).context("printing samples")?;
        writeln!(out, "{line}").context("printing samples")?;
    }
    out.flush().context("printing samples")?;
    Ok(())
}

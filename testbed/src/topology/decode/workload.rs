//! Machines (nodes and hosts), their links, pods, containers and
//! replication controllers.

use super::{at, is_dns_label, join, Decoder, Obj};
use crate::diag::{did_you_mean, At};
use crate::topology::model::*;
use crate::topology::yaml::{Node, Value};
use std::collections::BTreeMap;
use std::net::Ipv4Addr;

/// The largest number of replicas one controller may ask for.
pub const MAX_REPLICAS: u32 = 10_000;

const NODE: &[&str] = &["name", "labels", "link", "machine"];
const HOST: &[&str] = &["name", "link", "containers", "machine"];
const LINK: &[&str] = &["delay", "jitter", "loss", "duplicate", "reorder", "rate"];
const POD: &[&str] = &[
    "name",
    "namespace",
    "node",
    "labels",
    "network",
    "ip",
    "volumes",
    "containers",
];
const TEMPLATE: &[&str] = &["labels", "node", "network", "volumes", "containers"];
const CONTAINER: &[&str] = &[
    "name",
    "command",
    "env",
    "workingDir",
    "restartPolicy",
    "volumeMounts",
    "ready",
];
const RC: &[&str] = &["name", "namespace", "replicas", "selector", "template"];

impl Decoder<'_> {
    pub(super) fn machine(&mut self, node: &Node, path: &str, is_node: bool) -> Option<Machine> {
        let what = if is_node { "a node" } else { "a host" };
        let obj = self.obj(node, path, what, if is_node { NODE } else { HOST })?;
        let name = self
            .required(&obj, "name", what, if is_node { "node1" } else { "client" })
            .and_then(|(n, p)| self.name(n, &p, &format!("{what}'s name"), 63));
        let labels = self.labels(&obj, "labels", "`labels`");
        let link = obj.get("link").and_then(|(n, p)| self.link(n, &p));
        let containers = obj
            .get("containers")
            .map(|(n, p)| self.containers(n, &p, &[]))
            .unwrap_or_default();
        let machine = self.machine_ref(&obj);
        Some(Machine {
            name: name?,
            labels,
            link,
            containers,
            machine,
            at: obj.at(),
        })
    }

    fn link(&mut self, node: &Node, path: &str) -> Option<Link> {
        let obj = self.obj(node, path, "`link`", LINK)?;
        let mut link = Link {
            at: obj.at(),
            ..Link::default()
        };
        let dur_help = "a duration is a number and a unit: us, ms or s, e.g. 10ms or 1.5ms";
        let pct_help = "a percentage is a number from 0 to 100 followed by %, e.g. 1% or 0.1%";
        for key in ["delay", "jitter"] {
            let v = obj
                .get(key)
                .and_then(|(n, p)| self.parsed(n, &p, &format!("`{key}`"), dur_help));
            if key == "delay" {
                link.delay = v;
            } else {
                link.jitter = v;
            }
        }
        link.loss = obj
            .get("loss")
            .and_then(|(n, p)| self.parsed(n, &p, "`loss`", pct_help));
        link.duplicate = obj
            .get("duplicate")
            .and_then(|(n, p)| self.parsed(n, &p, "`duplicate`", pct_help));
        link.reorder = obj
            .get("reorder")
            .and_then(|(n, p)| self.parsed(n, &p, "`reorder`", pct_help));
        link.rate = obj.get("rate").and_then(|(n, p)| {
            self.parsed(
                n,
                &p,
                "`rate`",
                "a rate is a number and a unit: kbit, mbit or gbit (bits per second), e.g. 100mbit",
            )
        });
        if obj.get("delay").is_none() {
            for (key, why) in [
                ("jitter", "jitter varies the delay"),
                ("reorder", "reordering lets some packets skip the delay"),
            ] {
                if obj.get(key).is_some() {
                    self.err(
                        &obj.key_at(key),
                        format!("`{key}` needs a `delay`"),
                        format!("{why}, so add one to this link, e.g. `delay: 10ms`"),
                    );
                }
            }
        }
        Some(link)
    }

    pub(super) fn pod(&mut self, node: &Node, path: &str) -> Option<Pod> {
        let obj = self.obj(node, path, "a pod", POD)?;
        let name = self
            .required(&obj, "name", "a pod", "web")
            .and_then(|(n, p)| self.name(n, &p, "the pod's name", 63));
        let mut pod = self.pod_body(&obj, name.is_some())?;
        pod.name = name?;
        pod.namespace = self.namespace(&obj);
        let help = format!(
            "write an IPv4 address inside the node's pod subnet, e.g. {}",
            self.examples.pod_ip
        );
        pod.ip = obj
            .get("ip")
            .and_then(|(n, p)| self.parsed::<Ipv4Addr>(n, &p, "`ip`", &help));
        Some(pod)
    }

    pub(super) fn namespace(&mut self, obj: &Obj) -> Sp<String> {
        obj.get("namespace")
            .and_then(|(n, p)| self.name(n, &p, "the namespace", 63))
            .unwrap_or_else(|| Sp::defaulted("default".into(), obj.at()))
    }

    /// The fields a pod shares with a controller's template.
    fn pod_body(&mut self, obj: &Obj, keep: bool) -> Option<Pod> {
        let network = obj
            .get("network")
            .and_then(|(n, p)| self.network(n, &p))
            .unwrap_or_else(|| Sp::defaulted(Network::Bridge, obj.at()));
        let node = obj
            .get("node")
            .and_then(|(n, p)| self.name(n, &p, "`node`", 63));
        let labels = self.labels(obj, "labels", "`labels`");
        let volumes = self.volumes(obj);
        let names: Vec<String> = volumes.iter().map(|v| v.value.clone()).collect();
        let containers = self.pod_containers(obj, &names);
        keep.then(|| Pod {
            name: Sp::new(String::new(), obj.at()),
            namespace: Sp::defaulted("default".into(), obj.at()),
            node,
            labels,
            network,
            ip: None,
            volumes,
            containers,
            at: obj.at(),
            owner: None,
        })
    }

    /// A pod's `network` mode: bridge, host, none or `container:<pod>`.
    fn network(&mut self, n: &Node, p: &str) -> Option<Sp<Network>> {
        let t = self.text(n, p, "`network`")?;
        let mode = match t.value.as_str() {
            "bridge" => Network::Bridge,
            "host" => Network::Host,
            "none" => Network::None,
            v => match v.strip_prefix("container:") {
                Some(target) if is_dns_label(target, 63) => Network::Container(target.to_string()),
                Some(target) => {
                    self.err(&t.at, format!("`container:{target}` does not name a pod"), "write `container:` followed by the name of a pod in the same namespace, e.g. `container:web`");
                    return None;
                }
                None => {
                    let help = match did_you_mean(v, &["bridge", "host", "none"]) {
                        Some(s) => format!("did you mean `{s}`? The choices are bridge, host, none and container:<pod>"),
                        None => "the choices are bridge, host, none and container:<pod>".into(),
                    };
                    self.err(
                        &t.at,
                        format!("`network` `{v}` is not a network mode"),
                        help,
                    );
                    return None;
                }
            },
        };
        Some(Sp::new(mode, t.at))
    }

    /// A pod's `volumes`, by name; a name declared twice is reported and
    /// kept once.
    fn volumes(&mut self, obj: &Obj) -> Vec<Sp<String>> {
        let mut volumes: Vec<Sp<String>> = Vec::new();
        let Some((n, p)) = obj.get("volumes") else {
            return volumes;
        };
        for (vn, vp) in self.list(n, &p, "`volumes`") {
            let Some(vobj) = self.obj(vn, &vp, "a volume", &["name"]) else {
                continue;
            };
            let Some(name) = self
                .required(&vobj, "name", "a volume", "data")
                .and_then(|(n, p)| self.name(n, &p, "the volume's name", 63))
            else {
                continue;
            };
            if let Some(first) = volumes.iter().find(|v| v.value == name.value) {
                let line = first.at.pos.line;
                self.err(
                    &name.at,
                    format!(
                        "the volume `{}` is declared twice (first on line {line})",
                        name.value
                    ),
                    "give each volume of a pod its own name",
                );
                continue;
            }
            volumes.push(name);
        }
        volumes
    }

    /// A pod's required, non-empty `containers`, which may mount the
    /// volumes `names`.
    fn pod_containers(&mut self, obj: &Obj, names: &[String]) -> Vec<Container> {
        match self.required(
            obj,
            "containers",
            "a pod",
            "[{name: main, command: [sleep, infinity]}]",
        ) {
            Some((n, p)) => {
                let list = self.containers(n, &p, names);
                if matches!(&n.value, Value::Seq(items) if items.is_empty()) {
                    self.err(&at(n, &p), "`containers` is empty", "a pod runs at least one container, e.g. `- {name: main, command: [sleep, infinity]}`");
                }
                list
            }
            None => Vec::new(),
        }
    }

    fn containers(&mut self, node: &Node, path: &str, volumes: &[String]) -> Vec<Container> {
        let mut out: Vec<Container> = Vec::new();
        for (n, p) in self.list(node, path, "`containers`") {
            let Some(c) = self.container(n, &p, volumes) else {
                continue;
            };
            if let Some(first) = out.iter().find(|o| o.name.value == c.name.value) {
                let line = first.name.at.pos.line;
                self.err(
                    &c.name.at,
                    format!(
                        "the container name `{}` is used twice in this pod (first on line {line})",
                        c.name.value
                    ),
                    "give each container of a pod its own name",
                );
                continue;
            }
            out.push(c);
        }
        out
    }

    /// A container of a pod (or host) with volumes `volumes`.
    fn container(&mut self, node: &Node, path: &str, volumes: &[String]) -> Option<Container> {
        let obj = self.obj(node, path, "a container", CONTAINER)?;
        let name = self
            .required(&obj, "name", "a container", "main")
            .and_then(|(n, p)| self.name(n, &p, "the container's name", 63));
        let command = self
            .required(&obj, "command", "a container", "[sleep, infinity]")
            .and_then(|(n, p)| self.command(n, &p));
        let env = obj
            .get("env")
            .map(|(n, p)| self.env(n, &p))
            .unwrap_or_default();
        let working_dir = obj
            .get("workingDir")
            .and_then(|(n, p)| self.abs_path(n, &p, "`workingDir`"));
        let restart_policy = obj
            .get("restartPolicy")
            .and_then(|(n, p)| {
                self.choice(
                    n,
                    &p,
                    "`restartPolicy`",
                    &[
                        ("Always", RestartPolicy::Always),
                        ("OnFailure", RestartPolicy::OnFailure),
                        ("Never", RestartPolicy::Never),
                    ],
                )
            })
            .map_or(RestartPolicy::Always, |s| s.value);
        let mounts = obj
            .get("volumeMounts")
            .map(|(n, p)| self.volume_mounts(n, &p, volumes))
            .unwrap_or_default();
        let ready_tcp = obj.get("ready").and_then(|(n, p)| {
            let robj = self.obj(n, &p, "`ready`", &["tcp"])?;
            let (tn, tp) = self.required(&robj, "tcp", "`ready`", "8080")?;
            self.port(tn, &tp, "the readiness port")
        });
        Some(Container {
            name: name?,
            command: command?,
            env,
            working_dir,
            restart_policy,
            mounts,
            ready_tcp,
            at: obj.at(),
        })
    }

    /// A container's `command`: a non-empty list of the program and its
    /// arguments.
    fn command(&mut self, node: &Node, path: &str) -> Option<Sp<Vec<String>>> {
        let at = at(node, path);
        let Value::Seq(items) = &node.value else {
            let help = match &node.value {
                Value::Scalar { text, .. } => format!(
                    "write the program and its arguments as a list, e.g. `command: [{}]`, or `command: [sh, -c, \"{text}\"]` for a shell line",
                    text.split_whitespace().collect::<Vec<_>>().join(", ")
                ),
                _ => "write the program and its arguments as a list, e.g. `command: [sleep, infinity]`".into(),
            };
            self.err(
                &at,
                format!(
                    "`command` must be a list, but this is {}",
                    node.value.describe()
                ),
                help,
            );
            return None;
        };
        if items.is_empty() {
            self.err(
                &at,
                "`command` is empty",
                "name the program to run and its arguments, e.g. `command: [sleep, infinity]`",
            );
            return None;
        }
        let args: Vec<String> = items
            .iter()
            .enumerate()
            .filter_map(|(i, a)| {
                self.text(a, &format!("{path}[{i}]"), "a command argument")
                    .map(|t| t.value)
            })
            .collect();
        (args.len() == items.len()).then(|| Sp::new(args, at))
    }

    /// A container's `env`: a mapping of variable names to values (none
    /// for an empty `env:`); entries with a bad name or value are left out.
    fn env(&mut self, node: &Node, path: &str) -> BTreeMap<String, String> {
        let mut env = BTreeMap::new();
        match &node.value {
            Value::Map(m) => {
                for (k, v) in m {
                    let kp = join(path, &k.name);
                    let valid = !k.name.is_empty()
                        && !k.name.starts_with(|c: char| c.is_ascii_digit())
                        && k.name
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-');
                    if !valid {
                        self.err(
                            &At::new(k.pos, kp),
                            format!("`{}` is not a valid environment variable name", k.name),
                            "use letters, digits and `_`, not starting with a digit, e.g. LOG_LEVEL",
                        );
                        continue;
                    }
                    let value = match &v.value {
                        Value::Null => Some(String::new()),
                        _ => self.text(v, &kp, "an environment value").map(|t| t.value),
                    };
                    if let Some(value) = value {
                        env.insert(k.name.clone(), value);
                    }
                }
            }
            Value::Null => {}
            other => self.err(
                &at(node, path),
                format!(
                    "`env` must be a mapping of NAME: value, but this is {}",
                    other.describe()
                ),
                "write e.g. `env: {LOG_LEVEL: debug}`",
            ),
        }
        env
    }

    /// A container's `volumeMounts`, each of one of the pod's `volumes` at
    /// its own absolute path; bad mounts are left out.
    fn volume_mounts(&mut self, node: &Node, path: &str, volumes: &[String]) -> Vec<Mount> {
        let mut mounts: Vec<Mount> = Vec::new();
        for (mn, mp) in self.list(node, path, "`volumeMounts`") {
            let Some(mobj) = self.obj(mn, &mp, "a volume mount", &["name", "mountPath"]) else {
                continue;
            };
            let vname = self
                .required(&mobj, "name", "a volume mount", "data")
                .and_then(|(n, p)| self.text(n, &p, "the volume's name"));
            let mpath = self
                .required(&mobj, "mountPath", "a volume mount", "/data")
                .and_then(|(n, p)| self.abs_path(n, &p, "`mountPath`"));
            let (Some(vname), Some(mpath)) = (vname, mpath) else {
                continue;
            };
            if !volumes.contains(&vname.value) {
                let known: Vec<&str> = volumes.iter().map(String::as_str).collect();
                let help = match did_you_mean(&vname.value, &known) {
                    Some(s) => format!("did you mean `{s}`?"),
                    None if known.is_empty() => format!(
                        "declare it in the pod: `volumes: [{{name: {}}}]`",
                        vname.value
                    ),
                    None => format!("the pod's volumes are: {}", known.join(", ")),
                };
                self.err(
                    &vname.at,
                    format!("the pod has no volume named `{}`", vname.value),
                    help,
                );
                continue;
            }
            if let Some(first) = mounts.iter().find(|m| m.path.value == mpath.value) {
                let line = first.path.at.pos.line;
                self.err(
                    &mpath.at,
                    format!(
                        "`{}` is mounted twice in this container (first on line {line})",
                        mpath.value
                    ),
                    "mount each volume at its own path",
                );
                continue;
            }
            mounts.push(Mount {
                name: vname,
                path: mpath,
            });
        }
        mounts
    }

    fn abs_path(&mut self, node: &Node, path: &str, what: &str) -> Option<Sp<String>> {
        let t = self.text(node, path, what)?;
        if !t.value.starts_with('/') {
            self.err(
                &t.at,
                format!("{what} `{}` is not an absolute path", t.value),
                format!(
                    "write a path starting with `/`, e.g. `/{}`",
                    t.value.trim_start_matches("./")
                ),
            );
            return None;
        }
        if t.value.split('/').any(|c| c == "..") || t.value.contains('\0') {
            self.err(
                &t.at,
                format!("{what} `{}` contains `..`", t.value),
                "write the path without `..` components",
            );
            return None;
        }
        Some(t)
    }

    pub(super) fn controller(&mut self, node: &Node, path: &str) -> Option<Controller> {
        let obj = self.obj(node, path, "a replication controller", RC)?;
        let name = self
            .required(&obj, "name", "a replication controller", "web")
            .and_then(|(n, p)| self.name(n, &p, "the replication controller's name", 57));
        let namespace = self.namespace(&obj);
        let replicas = self
            .required(&obj, "replicas", "a replication controller", "3")
            .and_then(|(n, p)| {
                self.int(
                    n,
                    &p,
                    "`replicas`",
                    0,
                    i64::from(MAX_REPLICAS),
                    "replicas is a whole number from 0 to 10000",
                )
            })
            .map(|s| Sp::new(s.value as u32, s.at));
        let selector = self.labels(&obj, "selector", "`selector`");
        if obj.get("selector").is_none() {
            self.err(&obj.key_at("selector"), "a replication controller has no `selector`, which is required", "add the labels that identify its pods, e.g. `selector: {app: web}`, the same as in the template's labels");
        }
        let template = self
            .required(&obj, "template", "a replication controller", "{labels: {app: web}, containers: [...]}")
            .and_then(|(n, p)| {
                if let Value::Map(m) = &n.value {
                    for (k, _) in m {
                        if k.name == "name" || k.name == "ip" || k.name == "namespace" {
                            let why = match k.name.as_str() {
                                "name" => "the controller names its pods `<controller>-0`, `<controller>-1`, ...",
                                "ip" => "every replica would get the same address",
                                _ => "the pods take the controller's namespace",
                            };
                            self.err(&At::new(k.pos, join(&p, &k.name)), format!("a template cannot set `{}`: {why}", k.name), format!("remove `{}` from the template", k.name));
                        }
                    }
                }
                let tobj = self.obj(n, &p, "a pod template", &[TEMPLATE, &["name", "ip", "namespace"]].concat())?;
                self.pod_body(&tobj, true)
            });
        let (name, replicas, mut template) = (name?, replicas?, template?);
        template.namespace = namespace.clone();
        if obj.get("selector").is_some() && !template.labels.matches(&selector) {
            let missing: Vec<String> = selector
                .map
                .iter()
                .filter(|(k, v)| template.labels.map.get(*k) != Some(v))
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            self.err(&selector.at, format!("the selector does not match the template's labels: the template lacks {}", missing.join(", ")), "every label of the selector must be among `template.labels`, or the controller would not own its own pods");
        }
        if selector.map.is_empty() && obj.get("selector").is_some() {
            self.err(&selector.at, "the selector is empty", "give at least one label, e.g. `selector: {app: web}`, also set in the template's labels");
        }
        Some(Controller {
            name,
            namespace,
            replicas,
            selector,
            template,
            at: obj.at(),
        })
    }
}

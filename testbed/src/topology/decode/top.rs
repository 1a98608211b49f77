//! The top level of a topology file: its name and seed, the sections in
//! order, the pods of the replication controllers, and the names the
//! checks use.

use super::{at, Decoder, Examples, Obj};
use crate::topology::model::*;
use crate::topology::yaml::{Node, Value};

const TOP: &[&str] = &[
    "name",
    "seed",
    "cluster",
    "nodes",
    "hosts",
    "pods",
    "replicationControllers",
    "services",
    "checks",
    "machines",
];

impl Decoder<'_> {
    /// The whole topology of the file whose tree is `root`.
    pub(super) fn topology(&mut self, root: &Node) -> Topology {
        let obj = self.top(root);
        let name = self.topology_name(&obj);
        let seed = self.seed(&obj);
        let cluster = self.cluster(&obj);
        let (machines, machines_at) = self.machines(&obj);
        self.examples = Examples::of(
            &cluster.pod_cidr.value,
            cluster.subnet_len.value,
            &cluster.service_cidr.value,
        );
        let nodes = self.nodes(&obj);
        let hosts = self.section(&obj, "hosts", |d, n, p| d.machine(n, p, false));
        let mut pods: Vec<Pod> = self.section(&obj, "pods", |d, n, p| d.pod(n, p));
        let controllers =
            self.section(&obj, "replicationControllers", |d, n, p| d.controller(n, p));
        let services = self.section(&obj, "services", |d, n, p| d.service(n, p));
        pods.extend(replicas(&controllers));
        let declared = self.checks_field(&obj);
        let mut topo = Topology {
            name,
            seed,
            cluster,
            nodes,
            hosts,
            pods,
            controllers,
            services,
            checks: Vec::new(),
            machines,
            machines_at,
        };
        let known = crate::topology::checks::Known::of_topology(&topo);
        crate::topology::checks::check_names(&declared, &known, self.diags);
        topo.checks = declared.into_iter().map(|d| d.check).collect();
        topo
    }

    /// The top-level mapping (an empty one, after an error, if the file is
    /// empty or not a mapping).
    fn top<'a>(&mut self, root: &'a Node) -> Obj<'a> {
        let fallback = Obj {
            entries: &[],
            path: String::new(),
            pos: root.pos,
        };
        if root.value == Value::Null {
            self.err(
                &at(root, ""),
                "the file is empty",
                "a topology needs at least `name:` and `nodes:`; see topologies/minimal.yaml",
            );
            fallback
        } else {
            self.obj(root, "", "the topology", TOP).unwrap_or(fallback)
        }
    }

    /// The topology's `name` (`invalid` if it is missing or not a valid
    /// name).
    fn topology_name(&mut self, obj: &Obj) -> Sp<String> {
        self.required(obj, "name", "the topology", "demo")
            .and_then(|(n, p)| {
                let t = self.text(n, &p, "the topology's `name`")?;
                if crate::topology::names::check_name(&t.value).is_ok() {
                    Some(t)
                } else {
                    self.err(
                        &t.at,
                        format!("the topology's name `{}` is not 1-12 characters of a-z, 0-9 and `-` starting with a letter", t.value),
                        "the name prefixes every kernel object the testbed creates, so it must be short and plain, e.g. `demo` or `lab-1`",
                    );
                    None
                }
            })
            .unwrap_or_else(|| Sp::new("invalid".into(), obj.key_at("name")))
    }

    /// The topology's `seed` (0 if it is missing or not a whole number).
    fn seed(&mut self, obj: &Obj) -> u64 {
        obj.get("seed")
            .and_then(|(n, p)| {
                if let Value::Scalar { text, plain: true } = &n.value {
                    if let Ok(v) = text.parse::<u64>() {
                        return Some(v);
                    }
                }
                self.err(
                    &at(n, &p),
                    format!("`seed` must be a whole number from 0 to {}, but this is {}", u64::MAX, n.value.describe()),
                    "write e.g. `seed: 42`; the same seed gives the same random choices on every run",
                );
                None
            })
            .unwrap_or(0)
    }

    /// The required, non-empty `nodes` list.
    fn nodes(&mut self, obj: &Obj) -> Vec<Machine> {
        match self.required(obj, "nodes", "the topology", "[{name: node1}]") {
            Some((n, p)) => {
                let items = self.list(n, &p, "`nodes`");
                if items.is_empty() && matches!(n.value, Value::Seq(_)) {
                    self.err(
                        &at(n, &p),
                        "`nodes` is empty",
                        "a cluster needs at least one node, e.g. `nodes: [{name: node1}]`",
                    );
                }
                items
                    .into_iter()
                    .filter_map(|(n, p)| self.machine(n, &p, true))
                    .collect()
            }
            None => Vec::new(),
        }
    }

    /// The entries of the optional list `key` of `obj`, each decoded by `f`
    /// (those it rejects left out).
    fn section<T>(
        &mut self,
        obj: &Obj,
        key: &str,
        mut f: impl FnMut(&mut Self, &Node, &str) -> Option<T>,
    ) -> Vec<T> {
        let Some((node, path)) = obj.get(key) else {
            return Vec::new();
        };
        self.list(node, &path, &format!("`{key}`"))
            .into_iter()
            .filter_map(|(n, p)| f(self, n, &p))
            .collect()
    }
}

/// The pods of the replication controllers: `replicas` copies of each
/// one's template, named `RC-0`, `RC-1`, ... and owned by it.
fn replicas(controllers: &[Controller]) -> Vec<Pod> {
    let mut pods = Vec::new();
    for rc in controllers {
        for i in 0..rc.replicas.value {
            let mut pod = rc.template.clone();
            pod.name = Sp::new(format!("{}-{i}", rc.name.value), rc.name.at.clone());
            pod.owner = Some(rc.name.value.clone());
            pods.push(pod);
        }
    }
    pods
}

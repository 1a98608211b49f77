//! Services and their ports.

use super::{at, Decoder, Obj};
use crate::topology::model::*;
use crate::topology::yaml::{Node, Value};
use proxy::{Protocol, ServiceType, SessionAffinity};
use std::net::Ipv4Addr;

const SERVICE: &[&str] = &[
    "name",
    "namespace",
    "selector",
    "type",
    "clusterIP",
    "sessionAffinity",
    "ports",
];
const PORT: &[&str] = &["name", "port", "targetPort", "protocol", "nodePort"];

impl Decoder<'_> {
    pub(super) fn service(&mut self, node: &Node, path: &str) -> Option<Service> {
        let obj = self.obj(node, path, "a service", SERVICE)?;
        let name = self
            .required(&obj, "name", "a service", "web")
            .and_then(|(n, p)| self.name(n, &p, "the service's name", 63));
        let namespace = self.namespace(&obj);
        let selector = self.labels(&obj, "selector", "`selector`");
        if obj.get("selector").is_none() {
            self.err(
                &obj.key_at("selector"),
                "a service has no `selector`, which is required",
                "add the labels of the pods that serve it, e.g. `selector: {app: web}`",
            );
        }
        let kind = self.service_type(&obj);
        let help = format!(
            "write an IPv4 address inside serviceCIDR, e.g. {}",
            self.examples.cluster_ip
        );
        let cluster_ip = obj
            .get("clusterIP")
            .and_then(|(n, p)| self.parsed::<Ipv4Addr>(n, &p, "`clusterIP`", &help));
        let affinity = self.session_affinity(&obj);
        let ports = self.service_ports(&obj, &kind);
        Some(Service {
            name: name?,
            namespace,
            selector,
            kind,
            cluster_ip,
            affinity,
            ports,
            at: obj.at(),
        })
    }

    /// The service's `type`, ClusterIP when not written.
    fn service_type(&mut self, obj: &Obj) -> Sp<ServiceType> {
        obj.get("type")
            .and_then(|(n, p)| {
                self.choice(
                    n,
                    &p,
                    "`type`",
                    &[
                        ("ClusterIP", ServiceType::ClusterIP),
                        ("NodePort", ServiceType::NodePort),
                        ("LoadBalancer", ServiceType::LoadBalancer),
                    ],
                )
            })
            .unwrap_or_else(|| Sp::defaulted(ServiceType::ClusterIP, obj.at()))
    }

    /// The service's `sessionAffinity`, None when not written.
    fn session_affinity(&mut self, obj: &Obj) -> SessionAffinity {
        obj.get("sessionAffinity")
            .and_then(|(n, p)| {
                self.choice(
                    n,
                    &p,
                    "`sessionAffinity`",
                    &[
                        ("None", SessionAffinity::None),
                        ("ClientIP", SessionAffinity::ClientIP),
                    ],
                )
            })
            .map_or(SessionAffinity::None, |s| s.value)
    }

    /// The service's required, non-empty `ports`; a port whose number and
    /// protocol, or whose name, repeats an earlier one is reported and left out.
    fn service_ports(&mut self, obj: &Obj, kind: &Sp<ServiceType>) -> Vec<Port> {
        let mut ports: Vec<Port> = Vec::new();
        let Some((n, p)) =
            self.required(obj, "ports", "a service", "[{port: 80, targetPort: 8080}]")
        else {
            return ports;
        };
        let items = self.list(n, &p, "`ports`");
        if items.is_empty() && matches!(n.value, Value::Seq(_)) {
            self.err(
                &at(n, &p),
                "`ports` is empty",
                "a service needs at least one port, e.g. `- {port: 80, targetPort: 8080}`",
            );
        }
        let several = items.len() > 1;
        for (pn, pp) in items {
            if let Some(port) = self.service_port(pn, &pp, kind, several) {
                if !self.port_repeats(&ports, &port) {
                    ports.push(port);
                }
            }
        }
        ports
    }

    /// Whether `port` repeats the number and protocol, or the name, of one
    /// of the service's earlier `ports`; reports the repetition.
    fn port_repeats(&mut self, ports: &[Port], port: &Port) -> bool {
        if let Some(first) = ports
            .iter()
            .find(|o| o.port.value == port.port.value && o.protocol == port.protocol)
        {
            let line = first.port.at.pos.line;
            self.err(
                &port.port.at,
                format!(
                    "port {}/{} is declared twice in this service (first on line {line})",
                    port.port.value, port.protocol
                ),
                "give each port of a service its own number, or a different protocol",
            );
            return true;
        }
        if let (Some(a), Some(b)) = (
            &port.name,
            ports.iter().find(|o| {
                o.name.as_ref().map(|n| &n.value) == port.name.as_ref().map(|n| &n.value)
            }),
        ) {
            let line = b.at.pos.line;
            self.err(
                &a.at,
                format!(
                    "the port name `{}` is used twice in this service (first on line {line})",
                    a.value
                ),
                "give each port of a service its own name",
            );
            return true;
        }
        false
    }

    fn service_port(
        &mut self,
        node: &Node,
        path: &str,
        kind: &Sp<ServiceType>,
        several: bool,
    ) -> Option<Port> {
        let obj = self.obj(node, path, "a service port", PORT)?;
        let name = match obj.get("name") {
            Some((n, p)) => self.name(n, &p, "the port's name", 15),
            None => {
                if several {
                    self.err(
                        &obj.key_at("name"),
                        "this port has no `name`; a service with several ports must name each",
                        "add e.g. `name: http`",
                    );
                }
                None
            }
        };
        let port = self
            .required(&obj, "port", "a service port", "80")
            .and_then(|(n, p)| self.port(n, &p, "`port`"));
        let target_port = match obj.get("targetPort") {
            Some((n, p)) => self.port(n, &p, "`targetPort`"),
            None => port
                .as_ref()
                .map(|p| Sp::derived(p.value, p, "port", "as the same number")),
        };
        let protocol = obj
            .get("protocol")
            .and_then(|(n, p)| {
                self.choice(
                    n,
                    &p,
                    "`protocol`",
                    &[("TCP", Protocol::TCP), ("UDP", Protocol::UDP)],
                )
            })
            .map_or(Protocol::TCP, |s| s.value);
        let node_port = obj.get("nodePort").and_then(|(n, p)| {
            let np = self.int(
                n,
                &p,
                "`nodePort`",
                30000,
                32767,
                "a nodePort is from 30000 to 32767, or leave it out to have one allocated",
            )?;
            if kind.value == ServiceType::ClusterIP {
                let msg = if kind.is_written() {
                    "`nodePort` is set on a ClusterIP service".to_string()
                } else {
                    format!(
                        "`nodePort` is set on a ClusterIP service: {} is ClusterIP",
                        kind.named("type")
                    )
                };
                self.err(
                    &np.at,
                    msg,
                    "set `type: NodePort` (or LoadBalancer) on the service, or remove `nodePort`",
                );
                return None;
            }
            Some(Sp::new(np.value as u16, np.at))
        });
        Some(Port {
            name,
            port: port?,
            target_port: target_port?,
            protocol,
            node_port,
            at: obj.at(),
        })
    }
}

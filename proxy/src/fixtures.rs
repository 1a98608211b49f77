//! Services for the unit tests of the rule renderers.

use crate::{Endpoint, Protocol, Service, ServicePort, ServiceType, SessionAffinity};

/// A NodePort service `name` (cluster IP 10.96.0.10, port 80 to 8080, node
/// port 30080) with `eps` endpoints 10.244.1.2, .3, ... on node `n1`.
pub fn svc(name: &str, eps: usize, affinity: SessionAffinity) -> Service {
    Service {
        name: name.into(),
        namespace: "default".into(),
        kind: ServiceType::NodePort,
        cluster_ip: "10.96.0.10".parse().expect("ip"),
        load_balancer_ip: None,
        announced_by: None,
        session_affinity: affinity,
        selector: Default::default(),
        ports: vec![ServicePort {
            name: String::new(),
            protocol: Protocol::TCP,
            port: 80,
            target_port: 8080,
            node_port: Some(30080),
            endpoints: (0..eps)
                .map(|i| Endpoint {
                    pod: format!("web-{i}"),
                    node: "n1".into(),
                    ip: format!("10.244.1.{}", i + 2).parse().expect("ip"),
                    port: 8080,
                })
                .collect(),
        }],
    }
}

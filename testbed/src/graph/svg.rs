//! A self-contained SVG drawing, laid out here: hosts above the LAN bar,
//! nodes below it in rows (each with its uplink, bridge, overlay device and
//! pods), services in a column on the right with a line to every endpoint
//! pod. Sizes follow the content, so large topologies stay legible.

use super::{endpoint_pods, link_label, pod_label, service_label};
use crate::plan::types::{NodePlan, PodPlan};
use crate::plan::Plan;
use std::collections::HashMap;
use std::fmt::Write;

const MARGIN: i64 = 30;
const GAP: i64 = 40;
const NODE_W: i64 = 320;
const HOST_W: i64 = 240;
const POD_H: i64 = 20;
const SVC_W: i64 = 380;
const PER_ROW: usize = 4;
const PALETTE: [&str; 8] = [
    "#c0392b", "#2471a3", "#1e8449", "#b9770e", "#7d3c98", "#117a65", "#a04000", "#2e4053",
];

/// `s` with the characters XML gives a meaning escaped.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

struct Canvas {
    body: String,
    /// Drawn before `body`, so that boxes cover the lines that cross them.
    under: String,
}

impl Canvas {
    fn rect(&mut self, x: i64, y: i64, w: i64, h: i64, fill: &str, stroke: &str) {
        let _ = writeln!(
            self.body,
            r#"<rect x="{x}" y="{y}" width="{w}" height="{h}" rx="6" fill="{fill}" stroke="{stroke}"/>"#
        );
    }

    fn text(&mut self, x: i64, y: i64, class: &str, s: &str) {
        let _ = writeln!(
            self.body,
            r#"<text x="{x}" y="{y}" class="{class}">{}</text>"#,
            esc(s)
        );
    }

    fn line(&mut self, points: &[(i64, i64)], style: &str) {
        self.body.push_str(&polyline(points, style));
    }
}

/// An unfilled line through `points`, drawn with `style`.
fn polyline(points: &[(i64, i64)], style: &str) -> String {
    let pts: Vec<String> = points.iter().map(|(x, y)| format!("{x},{y}")).collect();
    format!(
        "<polyline points=\"{}\" fill=\"none\" {style}/>\n",
        pts.join(" ")
    )
}

/// Where the parts of the drawing go, fixed by the plan's counts.
struct Layout {
    /// The left edge of the hosts, the LAN bar and the nodes.
    left: i64,
    /// The LAN bar's width: that of the widest of the nodes' rows and the hosts.
    lan_w: i64,
    /// The top of the LAN bar.
    lan_y: i64,
}

/// Where each pod's box ends on the right (by namespace and name): the
/// services' lines meet their endpoints there.
type Anchors = HashMap<(String, String), (i64, i64)>;

/// The plan as an SVG document.
pub fn svg(p: &Plan) -> String {
    let mut c = Canvas {
        body: String::new(),
        under: String::new(),
    };
    c.text(MARGIN, MARGIN + 10, "title", &title(p));
    let hosts_y = MARGIN + 30;
    let l = layout(p, hosts_y);
    draw_hosts(&mut c, p, &l, hosts_y);
    draw_lan(&mut c, p, &l);
    let mut anchors = Anchors::new();
    let nodes_bottom = draw_nodes(&mut c, p, &l, &mut anchors);
    let sx = l.left + l.lan_w + 120;
    let services_bottom = draw_services(&mut c, p, &l, sx, &anchors);

    let width = if p.services.is_empty() {
        l.left + l.lan_w + MARGIN
    } else {
        sx + SVC_W + MARGIN
    };
    let height = nodes_bottom.max(services_bottom) + MARGIN;
    document(p, &c, width, height)
}

/// The layout of a plan whose hosts' row starts at `hosts_y`.
fn layout(p: &Plan, hosts_y: i64) -> Layout {
    let cols = p.nodes.len().clamp(1, PER_ROW) as i64;
    let nodes_w = cols * NODE_W + (cols - 1) * GAP;
    let hosts_w = p.hosts.len() as i64 * (HOST_W + GAP) - GAP;
    Layout {
        left: MARGIN + 20,
        lan_w: nodes_w.max(hosts_w),
        lan_y: if p.hosts.is_empty() {
            hosts_y
        } else {
            hosts_y + 90
        },
    }
}

/// The title line: the testbed's name, its counts, overlay and proxy mode.
fn title(p: &Plan) -> String {
    format!(
        "testbed {} — {} · {} · {} · {} · overlay {} · proxy {:?}",
        p.name,
        count(p.nodes.len(), "node"),
        count(p.hosts.len(), "host"),
        count(p.pods.len(), "pod"),
        count(p.services.len(), "service"),
        p.cluster.overlay,
        p.cluster.proxy
    )
    .replace("Iptables", "iptables")
    .replace("Nftables", "nftables")
    .replace("Userspace", "userspace")
}

/// The hosts in a row at `y`, above the LAN, each with its line down to it.
fn draw_hosts(c: &mut Canvas, p: &Plan, l: &Layout, y: i64) {
    for (i, h) in p.hosts.iter().enumerate() {
        let x = l.left + i as i64 * (HOST_W + GAP);
        c.rect(x, y, HOST_W, 44, "#eef7ea", "#4a8a3a");
        c.text(x + 10, y + 17, "b", &format!("host {}", h.name));
        c.text(
            x + 10,
            y + 34,
            "s",
            &format!("eth0 {} · {}", h.ip, h.uplink.peer.name),
        );
        let cx = x + HOST_W / 2;
        c.line(
            &[(cx, y + 44), (cx, l.lan_y)],
            r##"stroke="#555" stroke-width="2""##,
        );
        if let Some(label) = link_label(&h.link) {
            c.text(cx + 6, y + 64, "imp", &label);
        }
    }
}

/// The LAN bar: its bridge, namespace, address range and MTU.
fn draw_lan(c: &mut Canvas, p: &Plan, l: &Layout) {
    c.rect(l.left, l.lan_y, l.lan_w, 30, "#e8e8e8", "#777");
    c.text(
        l.left + 10,
        l.lan_y + 20,
        "b",
        &format!(
            "LAN {} in {} · {} · mtu {}",
            p.fabric.bridge.name, p.fabric.netns, p.cluster.underlay_cidr, p.cluster.mtu
        ),
    );
}

/// The nodes, in rows below the LAN, each row as tall as its tallest node;
/// records where every pod is in `anchors`. Returns the rows' bottom.
fn draw_nodes(c: &mut Canvas, p: &Plan, l: &Layout, anchors: &mut Anchors) -> i64 {
    let mut row_y = l.lan_y + 30 + 60;
    for (r, row) in p.nodes.chunks(PER_ROW).enumerate() {
        let mut row_h = 0;
        for (col, n) in row.iter().enumerate() {
            let x = l.left + col as i64 * (NODE_W + GAP);
            row_h = row_h.max(draw_node(c, p, n, (x, row_y), anchors));
            draw_uplink(c, n, (x, row_y), r == 0, l.lan_y);
        }
        row_y += row_h + 50;
    }
    row_y
}

/// A node's box at `(x, y)`: its address, pod subnet, overlay device, bridge
/// and pods. Returns the box's height.
fn draw_node(
    c: &mut Canvas,
    p: &Plan,
    n: &NodePlan,
    (x, y): (i64, i64),
    anchors: &mut Anchors,
) -> i64 {
    let pods: Vec<_> = p.pods.iter().filter(|x| x.node == n.name).collect();
    let h = 96 + pods.len() as i64 * (POD_H + 4) + 8;
    c.rect(x, y, NODE_W, h, "#f7fafd", "#3b6ea5");
    c.text(x + 10, y + 18, "b", &format!("node {}", n.name));
    c.text(
        x + 10,
        y + 34,
        "s",
        &format!("eth0 {} · netns {}", n.ip, n.netns),
    );
    let ov = n
        .overlay
        .as_ref()
        .map(|o| format!(" · {} mtu {}", o.iface.name, o.iface.mtu))
        .unwrap_or_else(|| " · host-gw routes".into());
    c.text(x + 10, y + 50, "s", &format!("pods {}{ov}", n.lease.subnet));
    let br = n
        .bridge
        .addresses
        .first()
        .map(|a| a.to_string())
        .unwrap_or_default();
    c.rect(x + 10, y + 60, NODE_W - 20, 22, "#dbe8f5", "#3b6ea5");
    c.text(
        x + 18,
        y + 75,
        "s",
        &format!("bridge {} {br}", n.bridge.name),
    );
    draw_pods(c, &pods, (x, y), anchors);
    h
}

/// A node's pods, one under another below its bridge in the node's box at
/// `(x, y)`; those on the bridge get a line to it. Records where each is.
fn draw_pods(c: &mut Canvas, pods: &[&PodPlan], (x, y): (i64, i64), anchors: &mut Anchors) {
    for (k, pod) in pods.iter().enumerate() {
        let py = y + 92 + k as i64 * (POD_H + 4);
        let (fill, stroke) = match pod.network.as_str() {
            "bridge" => ("#ffffff", "#3b6ea5"),
            "host" => ("#fcefe3", "#b9770e"),
            "none" => ("#eeeeee", "#999"),
            _ => ("#f1eafa", "#7d3c98"),
        };
        c.rect(x + 24, py, NODE_W - 34, POD_H, fill, stroke);
        c.text(x + 32, py + 14, "s", &pod_label(pod));
        if pod.network == "bridge" {
            c.line(
                &[
                    (x + 16, y + 82),
                    (x + 16, py + POD_H / 2),
                    (x + 24, py + POD_H / 2),
                ],
                r##"stroke="#3b6ea5""##,
            );
        }
        anchors.insert(
            (pod.namespace.clone(), pod.name.clone()),
            (x + NODE_W - 10, py + POD_H / 2),
        );
    }
}

/// A node's uplink from the LAN bar (at `lan_y`) into its box at `(x, y)`:
/// straight down in the first row, else down the gap left of the column.
/// Labelled with the LAN side's device and the link's impairments.
fn draw_uplink(c: &mut Canvas, n: &NodePlan, (x, y): (i64, i64), first_row: bool, lan_y: i64) {
    let gx = x - GAP / 2 + if first_row { GAP / 2 + NODE_W / 2 } else { 0 };
    let style = r##"stroke="#555" stroke-width="2""##;
    if first_row {
        c.line(&[(gx, lan_y + 30), (gx, y)], style);
    } else {
        c.line(&[(gx, lan_y + 30), (gx, y + 9), (x, y + 9)], style);
    }
    let label = link_label(&n.link).unwrap_or_default();
    c.text(
        gx + 6,
        y - 8,
        "imp",
        &format!("{} {label}", n.uplink.peer.name),
    );
}

/// The services, in a column at `sx` right of the LAN, each with a line to
/// every endpoint pod and a dot of its colour on it. Returns the column's
/// bottom.
fn draw_services(c: &mut Canvas, p: &Plan, l: &Layout, sx: i64, anchors: &Anchors) -> i64 {
    let mut sy = l.lan_y;
    let mut dots: HashMap<(String, String), usize> = HashMap::new();
    for (i, s) in p.services.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        c.rect(sx, sy, SVC_W, 36, "#fff6d6", color);
        c.text(
            sx + 10,
            sy + 15,
            "b",
            &format!("{:?} {}.{}", s.kind, s.name, s.namespace),
        );
        let detail = service_label(s);
        let detail = detail.split_once(' ').map_or(detail.as_str(), |(_, d)| d);
        c.text(sx + 10, sy + 30, "s", detail);
        for pod in endpoint_pods(p, s) {
            let key = (pod.namespace.clone(), pod.name.clone());
            if let Some(&(px, py)) = anchors.get(&key) {
                let mid = sx - 40;
                let style =
                    format!(r#"stroke="{color}" stroke-opacity="0.6" stroke-dasharray="4 3""#);
                let line = polyline(
                    &[(sx, sy + 18), (mid, sy + 18), (mid, py), (px, py)],
                    &style,
                );
                c.under.push_str(&line);
                // A dot of the service's colour on the pod, one per service.
                let k = dots.entry(key).or_insert(0);
                let _ = writeln!(
                    c.body,
                    r#"<circle cx="{}" cy="{py}" r="4" fill="{color}"/>"#,
                    px - *k as i64 * 10
                );
                *k += 1;
            }
        }
        sy += 46;
    }
    sy
}

/// The whole document: header, style, background, then what `c` holds.
fn document(p: &Plan, c: &Canvas, width: i64, height: i64) -> String {
    let mut o = String::new();
    let _ = writeln!(
        o,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">"#
    );
    let _ = writeln!(o, "<title>testbed {}</title>", esc(&p.name));
    o.push_str("<style>.title{font-size:16px;font-weight:bold}.b{font-size:13px;font-weight:bold}.s{font-size:11px}.imp{font-size:11px;fill:#a93226}</style>\n");
    let _ = writeln!(
        o,
        r##"<rect width="{width}" height="{height}" fill="#ffffff"/>"##
    );
    o.push_str(&c.under);
    o.push_str(&c.body);
    o.push_str("</svg>\n");
    o
}

/// `n` of `what`, plural unless one: `1 node`, `3 pods`.
fn count(n: usize, what: &str) -> String {
    if n == 1 {
        format!("1 {what}")
    } else {
        format!("{n} {what}s")
    }
}

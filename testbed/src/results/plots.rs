//! SVG plots drawn in-process with `plotters`: per run, each workload's
//! latency and success rate over time with the fault windows shaded; per
//! experiment, the latency distribution (CDF) and the success rate of each
//! combination side by side, and the recovery time of each fault per
//! combination. The same input always gives the same bytes (no clock, no
//! hash-map order). Errors are the drawing library's, as text.

use super::summary::Summary;
use super::FaultRecord;
use crate::experiment::Workload;
use crate::traffic::{Sample, SampleOutcome};
use plotters::coord::types::RangedCoordf64;
use plotters::coord::Shift;
use plotters::prelude::*;

/// Plot size, pixels.
const SIZE: (u32, u32) = (960, 600);
/// The font of every text.
const FONT: &str = "sans-serif";
/// A fault window's shade.
const FAULT: RGBColor = RGBColor(230, 80, 60);
/// A failed send's mark.
const FAILED: RGBColor = RGBColor(200, 30, 30);
/// An ok send's mark.
const OK: RGBColor = RGBColor(40, 90, 180);

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Chart<'a, 'b> = ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, RangedCoordf64>>;

/// A chart over `x` by `y` in `area`, under `caption` if any.
fn chart<'a, 'b>(
    area: &'a Area<'b>,
    caption: Option<&str>,
    x: std::ops::Range<f64>,
    y: std::ops::Range<f64>,
) -> Result<Chart<'a, 'b>, String> {
    let mut b = ChartBuilder::on(area);
    if let Some(c) = caption {
        b.caption(c, (FONT, 16));
    }
    b.margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64)
        .build_cartesian_2d(x, y)
        .map_err(text)
}

/// Draws `c`'s grid and axes, described.
fn mesh(c: &mut Chart<'_, '_>, x_desc: &str, y_desc: &str) -> Result<(), String> {
    c.configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .label_style((FONT, 13))
        .draw()
        .map_err(text)
}

/// A chart over time (0 to `end_s`) by 0 to `top`, with the fault windows
/// shaded.
fn time_chart<'a, 'b>(
    area: &'a Area<'b>,
    faults: &[FaultRecord],
    end_s: f64,
    top: f64,
    y_desc: &str,
) -> Result<Chart<'a, 'b>, String> {
    let mut c = chart(area, None, 0.0..end_s, 0.0..top)?;
    mesh(&mut c, "time (s)", y_desc)?;
    let shade = windows(faults, end_s)
        .into_iter()
        .map(|(a, b)| Rectangle::new([(a, 0.0), (b, top)], FAULT.mix(0.15).filled()));
    c.draw_series(shade).map_err(text)?;
    Ok(c)
}

/// Turns a drawing error into text.
fn text<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

/// The run's plot of workload `w`: latency of each ok send over time (failed
/// sends marked at the top), and below it the success rate per bin (100 ms
/// bins for workloads under 10 s, 1 s bins otherwise); fault windows
/// shaded in both. `samples` holds the run's samples (any workload).
pub fn run_plot(
    w: &Workload,
    samples: &[Sample],
    faults: &[FaultRecord],
) -> Result<String, String> {
    let mine: Vec<&Sample> = samples.iter().filter(|s| s.workload == w.name).collect();
    let end_s = mine
        .iter()
        .map(|s| (s.sent_us + s.latency_us) as f64 / 1e6)
        .fold((w.start + w.duration).as_secs_f64(), f64::max)
        .max(0.001);
    let top_ms = mine
        .iter()
        .filter(|s| s.outcome == SampleOutcome::Ok)
        .map(|s| s.latency_us as f64 / 1000.0)
        .fold(1.0, f64::max)
        * 1.1;
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(text)?;
        let title = format!("{} ({:?})", w.name, w.kind).to_lowercase();
        let root = root.titled(&title, (FONT, 22)).map_err(text)?;
        let (upper, lower) = root.split_vertically(SIZE.1 * 3 / 5 - 30);
        latency_panel(&upper, &mine, faults, end_s, top_ms)?;
        let bin_us = if w.duration.as_secs() < 10 {
            100_000
        } else {
            1_000_000
        };
        success_panel(&lower, &mine, faults, end_s, bin_us)?;
        root.present().map_err(text)?;
    }
    Ok(svg)
}

/// Each fault's window in seconds, clipped to `[0, end_s]`, at least 0.5%
/// of the run wide.
fn windows(faults: &[FaultRecord], end_s: f64) -> Vec<(f64, f64)> {
    faults
        .iter()
        .map(|f| {
            let from = (f.at / 1000.0).clamp(0.0, end_s);
            let to = f.until.map_or(end_s, |u| u / 1000.0).clamp(from, end_s);
            // A moment (a kill) is drawn as a thin band, 0.5% of the run.
            (from, to.max(from + end_s * 0.005).min(end_s))
        })
        .collect()
}

fn latency_panel(
    area: &Area<'_>,
    mine: &[&Sample],
    faults: &[FaultRecord],
    end_s: f64,
    top_ms: f64,
) -> Result<(), String> {
    let mut chart = time_chart(area, faults, end_s, top_ms, "latency (ms)")?;
    let ok = mine.iter().filter(|s| s.outcome == SampleOutcome::Ok);
    chart
        .draw_series(ok.map(|s| {
            let at = (s.sent_us as f64 / 1e6, s.latency_us as f64 / 1000.0);
            Circle::new(at, 2, OK.filled())
        }))
        .map_err(text)?
        .label("ok send: latency")
        .legend(|(x, y)| Circle::new((x + 10, y), 3, OK.filled()));
    let failed = mine.iter().filter(|s| s.outcome != SampleOutcome::Ok);
    chart
        .draw_series(failed.map(|s| Cross::new((s.sent_us as f64 / 1e6, top_ms * 0.97), 4, FAILED)))
        .map_err(text)?
        .label("failed send")
        .legend(|(x, y)| Cross::new((x + 10, y), 4, FAILED));
    chart
        .draw_series(std::iter::once(Rectangle::new(
            [(0.0, 0.0), (0.0, 0.0)],
            FAULT.mix(0.15).filled(),
        )))
        .map_err(text)?
        .label("fault active")
        .legend(|(x, y)| Rectangle::new([(x, y - 5), (x + 20, y + 5)], FAULT.mix(0.3).filled()));
    chart
        .configure_series_labels()
        .label_font((FONT, 13))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .draw()
        .map_err(text)
}

fn success_panel(
    area: &Area<'_>,
    mine: &[&Sample],
    faults: &[FaultRecord],
    end_s: f64,
    bin_us: u64,
) -> Result<(), String> {
    let mut bins: std::collections::BTreeMap<u64, (u64, u64)> = Default::default();
    for s in mine {
        let e = bins.entry(s.sent_us / bin_us).or_default();
        e.0 += 1;
        e.1 += u64::from(s.outcome == SampleOutcome::Ok);
    }
    let points: Vec<(f64, f64)> = bins
        .iter()
        .map(|(b, (n, ok))| {
            let mid = (*b as f64 + 0.5) * bin_us as f64 / 1e6;
            (mid, 100.0 * *ok as f64 / *n as f64)
        })
        .collect();
    let y_desc = format!("success % per {} ms", bin_us / 1000);
    let mut chart = time_chart(area, faults, end_s, 105.0, &y_desc)?;
    chart
        .draw_series(LineSeries::new(points.iter().copied(), OK.stroke_width(2)))
        .map_err(text)?;
    chart
        .draw_series(points.iter().map(|p| Circle::new(*p, 2, OK.filled())))
        .map_err(text)?;
    Ok(())
}

/// A combination's colour.
fn colour(i: usize) -> PaletteColor<Palette99> {
    Palette99::pick(i)
}

/// Areas for `n` panels stacked under a title, left of a key naming each
/// combination (`#1 proxy=iptables` with its colour).
fn panels<'a>(
    root: &Area<'a>,
    summary: &Summary,
    title: &str,
    n: usize,
) -> Result<Vec<Area<'a>>, String> {
    root.fill(&WHITE).map_err(text)?;
    let inner = root.titled(title, (FONT, 22)).map_err(text)?;
    let (plots, key) = inner.split_horizontally(SIZE.0 * 7 / 10);
    for (i, c) in summary.combinations.iter().enumerate() {
        let y = 40 + 22 * i as i32;
        key.draw(&Rectangle::new(
            [(8, y - 6), (26, y + 6)],
            colour(i).filled(),
        ))
        .map_err(text)?;
        let label = format!("#{} {}", i + 1, c.name);
        key.draw(&Text::new(label, (32, y - 7), (FONT, 13)))
            .map_err(text)?;
    }
    Ok(plots.split_evenly((n.max(1), 1)))
}

/// `plots/latency.svg`: per workload, the CDF of the ok sends' latency of
/// each combination (all repetitions pooled). `latencies[c][w]` holds the
/// latencies (ms) of combination `c` of `summary`, workload `w` of
/// `summary.workloads`.
pub fn latency_plot(summary: &Summary, latencies: &[Vec<Vec<f64>>]) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(
            &mut svg,
            (SIZE.0, SIZE.1.max(320 * summary.workloads.len() as u32)),
        )
        .into_drawing_area();
        let title = format!(
            "{}: latency distribution per combination",
            summary.experiment
        );
        let areas = panels(&root, summary, &title, summary.workloads.len())?;
        for (w, (name, area)) in summary.workloads.iter().zip(&areas).enumerate() {
            let top = latencies
                .iter()
                .flat_map(|c| c.get(w).into_iter().flatten())
                .fold(1.0_f64, |a, b| a.max(*b))
                * 1.05;
            let mut chart = chart(area, Some(name), 0.0..top, 0.0..1.0)?;
            mesh(&mut chart, "latency (ms)", "fraction of ok sends")?;
            for c in 0..summary.combinations.len() {
                let mut l = latencies
                    .get(c)
                    .and_then(|x| x.get(w))
                    .cloned()
                    .unwrap_or_default();
                l.sort_by(f64::total_cmp);
                let n = l.len() as f64;
                let cdf = l.iter().enumerate().map(|(i, v)| (*v, (i + 1) as f64 / n));
                let col = colour(c);
                chart
                    .draw_series(LineSeries::new(cdf, col.stroke_width(2)))
                    .map_err(text)?;
            }
        }
        root.present().map_err(text)?;
    }
    Ok(svg)
}

/// Draws one bar per combination in `area` (values by combination index),
/// labelled with the combinations' indexes (`#1`, `#2`, ... as in the
/// key); `None` values are left out.
fn bars(
    area: &Area<'_>,
    summary: &Summary,
    values: &[Option<f64>],
    caption: &str,
    y_desc: &str,
    top: f64,
) -> Result<(), String> {
    let n = summary.combinations.len();
    let label = |x: &f64| {
        let i = x.round();
        if (x - i).abs() < 1e-6 && i >= 0.0 && (i as usize) < n {
            format!("#{}", i as usize + 1)
        } else {
            String::new()
        }
    };
    let mut chart = chart(area, Some(caption), -0.5..(n as f64 - 0.5), 0.0..top)?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .x_labels(n + 1)
        .x_label_formatter(&label)
        .y_desc(y_desc)
        .label_style((FONT, 13))
        .draw()
        .map_err(text)?;
    for c in 0..n {
        let col = colour(c);
        let x = c as f64;
        let bar = values
            .get(c)
            .copied()
            .flatten()
            .map(|v| Rectangle::new([(x - 0.3, 0.0), (x + 0.3, v)], col.filled()));
        chart.draw_series(bar).map_err(text)?;
    }
    Ok(())
}

/// `plots/success.svg`: per workload, the success rate of each
/// combination (all repetitions pooled).
pub fn success_plot(summary: &Summary) -> Result<String, String> {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(
            &mut svg,
            (SIZE.0, SIZE.1.max(320 * summary.workloads.len() as u32)),
        )
        .into_drawing_area();
        let title = format!("{}: success rate per combination", summary.experiment);
        let areas = panels(&root, summary, &title, summary.workloads.len())?;
        for (name, area) in summary.workloads.iter().zip(&areas) {
            let values: Vec<Option<f64>> = summary
                .combinations
                .iter()
                .map(|c| {
                    c.workloads
                        .iter()
                        .find(|w| &w.name == name)
                        .map(|w| 100.0 * w.success_rate)
                })
                .collect();
            bars(area, summary, &values, name, "success %", 105.0)?;
        }
        root.present().map_err(text)?;
    }
    Ok(svg)
}

/// `plots/recovery.svg`: per fault of the timeline, the recovery time of
/// each combination: the bar is the median over the repetitions that
/// recovered, each repetition a dot; a repetition that never recovered is
/// a cross at the top.
pub fn recovery_plot(summary: &Summary) -> Result<String, String> {
    let faults = summary
        .combinations
        .iter()
        .map(|c| c.faults.len())
        .max()
        .unwrap_or(0);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (SIZE.0, SIZE.1.max(320 * faults as u32)))
            .into_drawing_area();
        let title = format!(
            "{}: recovery time per fault and combination",
            summary.experiment
        );
        let areas = panels(&root, summary, &title, faults)?;
        if faults == 0 {
            areas[0]
                .draw(&Text::new(
                    "no faults in the timeline",
                    (40, 40),
                    (FONT, 16),
                ))
                .map_err(text)?;
        }
        for (f, area) in areas.iter().enumerate().take(faults) {
            recovery_panel(area, summary, f)?;
        }
        root.present().map_err(text)?;
    }
    Ok(svg)
}

fn recovery_panel(area: &Area<'_>, summary: &Summary, f: usize) -> Result<(), String> {
    let reps: Vec<Vec<Option<f64>>> = summary
        .combinations
        .iter()
        .map(|c| {
            c.faults
                .get(f)
                .map(|x| x.runs.iter().map(|r| r.recovery_ms).collect())
                .unwrap_or_default()
        })
        .collect();
    let top = reps
        .iter()
        .flatten()
        .flatten()
        .fold(100.0_f64, |a, b| a.max(*b))
        * 1.15;
    let medians: Vec<Option<f64>> = reps
        .iter()
        .map(|r| {
            let done: Vec<f64> = r.iter().flatten().copied().collect();
            super::stats::percentiles(&done).map(|p| p.p50)
        })
        .collect();
    let spec = summary
        .combinations
        .iter()
        .find_map(|c| c.faults.get(f))
        .map_or(String::new(), |x| x.spec.clone());
    bars(
        area,
        summary,
        &medians,
        &format!(
            "fault {}: {spec} (bar: median; dot: a repetition; x: never recovered)",
            f + 1
        ),
        "recovery (ms)",
        top,
    )?;
    // The repetitions over the bars, on the same coordinates.
    let n = summary.combinations.len();
    let mut chart = chart(area, Some(" "), -0.5..(n as f64 - 0.5), 0.0..top)?;
    for (c, r) in reps.iter().enumerate() {
        let k = r.len().max(1) as f64;
        let x = |i: usize| c as f64 - 0.2 + 0.4 * (i as f64 + 0.5) / k;
        chart
            .draw_series(
                r.iter()
                    .enumerate()
                    .filter_map(|(i, v)| v.map(|v| Circle::new((x(i), v), 3, BLACK.filled()))),
            )
            .map_err(text)?;
        chart
            .draw_series(
                r.iter()
                    .enumerate()
                    .filter(|(_, v)| v.is_none())
                    .map(|(i, _)| Cross::new((x(i), top * 0.95), 5, FAILED)),
            )
            .map_err(text)?;
    }
    Ok(())
}

//! PNG plots of a report (plotters, bitmap backend, text through ab_glyph with a system
//! TrueType font; charts are drawn without text when no font is found).

use super::report::{Report, WorkloadResult};
use crate::error::{Error, Result};
use plotters::prelude::*;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
];

/// Registers a system font for plotters once; false when none could be loaded.
fn font() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let path = std::env::var("CIDCACHE_PLOT_FONT").ok();
        for p in path.iter().map(String::as_str).chain(FONTS.iter().copied()) {
            if let Ok(b) = std::fs::read(p) {
                let b: &'static [u8] = Box::leak(b.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, b).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

/// Log-axis ticks fall on powers of ten: `100B`, `10kB`, `1MB`.
fn decimal_bytes(x: f64) -> String {
    match x {
        x if x >= 1e9 => format!("{}GB", x / 1e9),
        x if x >= 1e6 => format!("{}MB", x / 1e6),
        x if x >= 1e3 => format!("{}kB", x / 1e3),
        x => format!("{x}B"),
    }
}

fn perr(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("plot: {e}"))
}

/// Writes `latency.png`, `throughput_size.png` and `throughput_clients.png` (the last two when
/// the report has such workloads) into `dir`; returns the files written.
pub fn write_plots(r: &Report, dir: &Path) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("cannot create {}", dir.display()), e))?;
    let text = font();
    let mut out = Vec::new();
    let p = dir.join("latency.png");
    latency(r, &p, text)?;
    out.push(p);
    let by = |group: &str, x: fn(&WorkloadResult) -> f64, y: fn(&WorkloadResult) -> f64| {
        let mut series: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
        for w in r.workloads.iter().filter(|w| w.workload.group == group) {
            let label = match w.workload.read_percent {
                100 => "read (get)".to_string(),
                0 => "write (put)".to_string(),
                n => format!("{n}% reads"),
            };
            series.entry(label).or_default().push((x(w), y(w)));
        }
        for v in series.values_mut() {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        series
    };
    let s = by("size", |w| w.workload.object_size as f64, |w| w.gb_per_s);
    if !s.is_empty() {
        let p = dir.join("throughput_size.png");
        xy(
            &p,
            text,
            "Throughput against object size (one client)",
            "object size",
            "GB/s",
            &s,
            true,
        )?;
        out.push(p);
    }
    let s = by("clients", |w| w.workload.clients as f64, |w| w.ops_per_s);
    if !s.is_empty() {
        let p = dir.join("throughput_clients.png");
        xy(
            &p,
            text,
            "Throughput against client processes (4 KiB objects)",
            "client processes",
            "objects/s",
            &s,
            false,
        )?;
        out.push(p);
    }
    Ok(out)
}

/// x = number of nines of the percentile (0 = p0, 1 = p90, 2 = p99, 3 = p99.9).
fn nines(p: f64) -> f64 {
    -(1.0 - p / 100.0).max(1e-5).log10()
}

fn latency(r: &Report, path: &Path, text: bool) -> Result<()> {
    let root = BitMapBackend::new(path, (1400, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(perr)?;
    let pts: Vec<(&str, Vec<(f64, f64)>)> = r
        .workloads
        .iter()
        .map(|w| {
            let c = w
                .curve
                .iter()
                .filter(|(p, _)| *p < 100.0)
                .map(|&(p, ns)| (nines(p), (ns.max(1)) as f64))
                .collect();
            (w.workload.name.as_str(), c)
        })
        .collect();
    let ymax = pts
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.1))
        .fold(10.0, f64::max)
        * 2.0;
    let ymin = pts
        .iter()
        .flat_map(|(_, v)| v.iter().map(|p| p.1))
        .fold(f64::MAX, f64::min)
        .clamp(1.0, ymax / 4.0)
        / 2.0;
    let mut b = ChartBuilder::on(&root);
    b.margin(15);
    if text {
        b.caption("Call latency percentiles per workload", ("sans-serif", 26))
            .x_label_area_size(45)
            .y_label_area_size(80);
    }
    let mut chart = b
        .build_cartesian_2d(0f64..4.05f64, (ymin..ymax).log_scale())
        .map_err(perr)?;
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("percentile")
            .y_desc("latency")
            .x_labels(5)
            .x_label_formatter(&|x| match x.round() as i64 {
                0 => "p0".into(),
                1 => "p90".into(),
                2 => "p99".into(),
                3 => "p99.9".into(),
                _ => "p99.99".into(),
            })
            .y_label_formatter(&|y| super::report::dur(*y as u64));
    } else {
        mesh.x_labels(0).y_labels(0);
    }
    mesh.draw().map_err(perr)?;
    for (i, (name, v)) in pts.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let s = chart
            .draw_series(LineSeries::new(v.iter().copied(), color.stroke_width(2)))
            .map_err(perr)?;
        if text {
            s.label(*name).legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
            });
        }
    }
    if text {
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()
            .map_err(perr)?;
    }
    root.present().map_err(perr)
}

fn xy(
    path: &Path,
    text: bool,
    title: &str,
    xdesc: &str,
    ydesc: &str,
    series: &BTreeMap<String, Vec<(f64, f64)>>,
    log_x: bool,
) -> Result<()> {
    let root = BitMapBackend::new(path, (1200, 800)).into_drawing_area();
    root.fill(&WHITE).map_err(perr)?;
    let all = || series.values().flat_map(|v| v.iter());
    let xmin = all().map(|p| p.0).fold(f64::MAX, f64::min);
    let xmax = all().map(|p| p.0).fold(0.0, f64::max);
    let ymax = all().map(|p| p.1).fold(0.0, f64::max).max(1e-9) * 1.15;
    let mut b = ChartBuilder::on(&root);
    b.margin(15);
    if text {
        b.caption(title, ("sans-serif", 26))
            .x_label_area_size(45)
            .y_label_area_size(80);
    }
    let fmt_y = |y: &f64| {
        if ydesc == "GB/s" {
            format!("{y:.2}")
        } else {
            super::report::si(*y)
        }
    };
    // Two coordinate kinds need two chart types; a macro would hide less than this repetition.
    if log_x {
        let mut chart = b
            .build_cartesian_2d((xmin * 0.7..xmax * 1.4).log_scale(), 0f64..ymax)
            .map_err(perr)?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc(xdesc)
                .y_desc(ydesc)
                .x_label_formatter(&|x| decimal_bytes(*x))
                .y_label_formatter(&fmt_y);
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(perr)?;
        for (i, (name, v)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(v.iter().copied(), color.stroke_width(2)))
                .map_err(perr)?;
            let s = chart
                .draw_series(v.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(perr)?;
            if text {
                s.label(name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
            }
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 15))
                .draw()
                .map_err(perr)?;
        }
    } else {
        let mut chart = b
            .build_cartesian_2d((xmin - 0.5)..(xmax + 0.5), 0f64..ymax)
            .map_err(perr)?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc(xdesc)
                .y_desc(ydesc)
                .x_labels((xmax - xmin) as usize + 2)
                .x_label_formatter(&|x| {
                    if (x - x.round()).abs() < 1e-6 {
                        format!("{x:.0}")
                    } else {
                        String::new()
                    }
                })
                .y_label_formatter(&fmt_y);
        } else {
            mesh.x_labels(0).y_labels(0);
        }
        mesh.draw().map_err(perr)?;
        for (i, (name, v)) in series.iter().enumerate() {
            let color = Palette99::pick(i).to_rgba();
            chart
                .draw_series(LineSeries::new(v.iter().copied(), color.stroke_width(2)))
                .map_err(perr)?;
            let s = chart
                .draw_series(v.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(perr)?;
            if text {
                s.label(name.as_str()).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(3))
                });
            }
        }
        if text {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 15))
                .draw()
                .map_err(perr)?;
        }
    }
    root.present().map_err(perr)
}

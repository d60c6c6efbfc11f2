//! `--plot FILE.svg`: verified flows per second over the run, and the latency distribution
//! (also drawn into `--report FILE.html`).
use std::path::Path;

use anyhow::{anyhow, Result};
use hdrhistogram::Histogram as Hdr;
use plotters::{coord::Shift, prelude::*};

/// Bars of the latency histogram.
const BINS: u64 = 50;

/// The size of the drawing.
const SIZE: (u32, u32) = (900, 700);

/// Writes the two charts, one above the other, to `path`.
pub fn write_svg(
    path: &Path,
    title: &str,
    per_second: &[u64],
    latency_us: &Hdr<u64>,
    latency_name: &str,
) -> Result<()> {
    let root = SVGBackend::new(path, SIZE).into_drawing_area();
    draw(root, title, per_second, latency_us, latency_name)
        .map_err(|e| anyhow!("drawing {}: {e}", path.display()))
}

/// The two charts as an SVG document, for a page.
pub fn svg_text(
    title: &str,
    per_second: &[u64],
    latency_us: &Hdr<u64>,
    latency_name: &str,
) -> Result<String> {
    let mut text = String::new();
    {
        let root = SVGBackend::with_string(&mut text, SIZE).into_drawing_area();
        draw(root, title, per_second, latency_us, latency_name)
            .map_err(|e| anyhow!("drawing the stress charts: {e}"))?;
    }
    Ok(text)
}

fn draw<DB: DrawingBackend>(
    root: DrawingArea<DB, Shift>,
    title: &str,
    per_second: &[u64],
    latency_us: &Hdr<u64>,
    latency_name: &str,
) -> Result<(), String> {
    let fail = |e: &dyn std::fmt::Display| e.to_string();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let root = root
        .titled(title, ("sans-serif", 20))
        .map_err(|e| fail(&e))?;
    let (top, bottom) = root.split_vertically(330);

    let secs = per_second.len().max(1) as u64;
    let peak = per_second.iter().copied().max().unwrap_or(0).max(1);
    let mut chart = ChartBuilder::on(&top)
        .caption("verified flows per second", ("sans-serif", 16))
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d(0u64..secs, 0u64..peak + peak / 10 + 1)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("second of the run")
        .y_desc("flows/s")
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(LineSeries::new(
            per_second.iter().enumerate().map(|(i, n)| (i as u64, *n)),
            &BLUE,
        ))
        .map_err(|e| fail(&e))?;

    // Linear bins up to the 99.9th percentile; anything slower lands in the last one.
    let top_us = latency_us.value_at_quantile(0.999).max(BINS);
    let width = top_us.div_ceil(BINS);
    let mut counts = vec![0u64; BINS as usize];
    for v in latency_us.iter_recorded() {
        let bin = (v.value_iterated_to() / width).min(BINS - 1) as usize;
        counts[bin] += v.count_at_value();
    }
    let most = counts.iter().copied().max().unwrap_or(0).max(1);
    let mut chart = ChartBuilder::on(&bottom)
        .caption(
            format!("{latency_name} latency (bins of {width} us)"),
            ("sans-serif", 16),
        )
        .margin(10)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d((0u64..BINS * width).step(width), 0u64..most + most / 10 + 1)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("microseconds")
        .y_desc("flows")
        .draw()
        .map_err(|e| fail(&e))?;
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .style(GREEN.filled())
                .margin(1)
                .data(
                    counts
                        .iter()
                        .enumerate()
                        .map(|(i, c)| (i as u64 * width, *c)),
                ),
        )
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))?;
    Ok(())
}

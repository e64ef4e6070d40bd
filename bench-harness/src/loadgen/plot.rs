//! SVG line plots (plotters, svg backend only): panels side by side, x on a log
//! scale, y linear or log.

use std::path::Path;

use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::coord::Shift;
use plotters::prelude::*;

/// One line of a panel.
pub struct Line {
    /// Legend text.
    pub label: String,
    /// Colour.
    pub color: RGBColor,
    /// Dashed instead of solid.
    pub dashed: bool,
    /// Whether to mark each point with a circle.
    pub markers: bool,
    /// Points, x ascending.
    pub points: Vec<(f64, f64)>,
}

/// One panel.
pub struct Panel {
    /// Caption.
    pub title: String,
    /// Label of the x axis.
    pub x_label: String,
    /// Label of the y axis.
    pub y_label: String,
    /// y on a log scale.
    pub y_log: bool,
    /// Lines.
    pub lines: Vec<Line>,
    /// Where the legend goes.
    pub legend: SeriesLabelPosition,
}

/// Colours of the systems, by name.
pub fn color_of(system: &str) -> RGBColor {
    match system {
        "etcd" => RGBColor(0x1f, 0x77, 0xb4),
        "argus-always" => RGBColor(0xd6, 0x27, 0x28),
        "argus-batch" => RGBColor(0xff, 0x7f, 0x0e),
        _ => RGBColor(0x2c, 0xa0, 0x2c),
    }
}

fn bounds(p: &Panel, log_y: bool) -> ((f64, f64), (f64, f64)) {
    let pts = p.lines.iter().flat_map(|l| l.points.iter().copied());
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for (x, y) in pts {
        if x > 0.0 {
            x0 = x0.min(x);
            x1 = x1.max(x);
        }
        if !log_y || y > 0.0 {
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if x0 > x1 {
        (x0, x1) = (1.0, 10.0);
    }
    if y0 > y1 {
        (y0, y1) = (0.0, 1.0);
    }
    let x = (x0 / 1.5, x1 * 1.5);
    let y = if log_y { (y0 / 1.5, y1 * 1.5) } else { (y0.min(0.0), y1 * 1.05) };
    (x, y)
}

fn draw_panel<Y>(area: &DrawingArea<SVGBackend<'_>, Shift>, p: &Panel, x: (f64, f64), y: Y) -> Result<(), String>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let mut chart = ChartBuilder::on(area)
        .caption(&p.title, ("sans-serif", 17))
        .margin(12)
        .x_label_area_size(42)
        .y_label_area_size(70)
        .build_cartesian_2d((x.0..x.1).log_scale(), y)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc(p.x_label.as_str())
        .y_desc(p.y_label.as_str())
        .x_label_formatter(&|v| short(*v))
        .y_label_formatter(&|v| short(*v))
        .light_line_style(WHITE.mix(0.0))
        .draw()
        .map_err(|e| e.to_string())?;
    for l in &p.lines {
        let color = l.color;
        let style = color.stroke_width(2);
        let pts: Vec<(f64, f64)> = l.points.iter().copied().filter(|(x, _)| *x > 0.0).collect();
        let series = if l.dashed {
            chart.draw_series(DashedLineSeries::new(pts.clone(), 6, 4, style)).map_err(|e| e.to_string())?
        } else {
            chart.draw_series(LineSeries::new(pts.clone(), style)).map_err(|e| e.to_string())?
        };
        if !l.label.is_empty() {
            series
                .label(l.label.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2)));
        }
        if l.markers {
            chart
                .draw_series(pts.iter().map(|&(x, y)| Circle::new((x, y), 4, color.filled())))
                .map_err(|e| e.to_string())?;
        }
    }
    chart
        .configure_series_labels()
        .position(p.legend.clone())
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK.mix(0.3))
        .draw()
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Short tick labels: 1, 10, 1k, 2.5M, 0.1.
pub fn short(v: f64) -> String {
    let a = v.abs();
    let (n, suffix) = if a >= 1e9 {
        (v / 1e9, "G")
    } else if a >= 1e6 {
        (v / 1e6, "M")
    } else if a >= 1e3 {
        (v / 1e3, "k")
    } else {
        (v, "")
    };
    let s = if n.abs() >= 100.0 || n.fract().abs() < 1e-9 {
        format!("{n:.0}")
    } else if n.abs() >= 1.0 {
        format!("{n:.1}")
    } else {
        format!("{n:.2}")
    };
    let s = if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s };
    format!("{s}{suffix}")
}

/// Writes `panels` side by side into an SVG file of `width` × `height` pixels.
///
/// # Errors
///
/// Drawing or file errors, as text.
pub fn svg(path: &Path, title: &str, panels: &[Panel], width: u32, height: u32) -> Result<(), String> {
    let root = SVGBackend::new(path, (width, height)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let root = root.titled(title, ("sans-serif", 20)).map_err(|e| e.to_string())?;
    let areas = root.split_evenly((1, panels.len().max(1)));
    for (area, p) in areas.iter().zip(panels) {
        let (x, y) = bounds(p, p.y_log);
        if p.y_log {
            draw_panel(area, p, x, (y.0..y.1).log_scale())?;
        } else {
            draw_panel(area, p, x, y.0..y.1)?;
        }
    }
    root.present().map_err(|e| format!("write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_labels() {
        assert_eq!(short(1.0), "1");
        assert_eq!(short(1500.0), "1.5k");
        assert_eq!(short(2_000_000.0), "2M");
        assert_eq!(short(0.25), "0.25");
    }

    #[test]
    fn writes_an_svg() {
        let dir = std::env::temp_dir().join(format!("argus-bench-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t.svg");
        let line = |s: &str, k: f64| Line {
            label: s.to_string(),
            color: color_of(s),
            dashed: false,
            markers: true,
            points: vec![(1.0, k), (100.0, 2.0 * k), (10_000.0, 3.0 * k)],
        };
        let p = |y_log| Panel {
            title: "t".into(),
            x_label: "x".into(),
            y_label: "y".into(),
            y_log,
            lines: vec![line("etcd", 1.0), line("argus-always", 2.0)],
            legend: SeriesLabelPosition::LowerRight,
        };
        svg(&path, "test", &[p(true), p(false)], 800, 300).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("<svg") && text.contains("etcd"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The size/quality picture: file size against KL divergence from the original, one curve per way
//! of getting there, drawn as SVG with plotters (SVG needs no fonts or image libraries).

use std::path::Path;

use plotters::prelude::*;

use super::table::StageTable;
use super::{write_atomically, PipelineError, Result};

/// One curve of the plot: points `(MiB, mean KLD, label)`, drawn in the given order.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PlotSeries {
    /// Legend text.
    pub name: String,
    /// `(file size in MiB, mean KL divergence, point label)`.
    pub points: Vec<(f64, f64, String)>,
}

impl StageTable {
    /// The plotted rows grouped by their `series`, each series in row order (rows without a series
    /// or a KL divergence are left out).
    pub fn plot_series(&self) -> Vec<PlotSeries> {
        let mut out: Vec<PlotSeries> = Vec::new();
        for row in &self.rows {
            let (Some(name), Some(kld)) = (&row.series, row.quality.mean_kld) else {
                continue;
            };
            let point = (
                row.file_bytes as f64 / (1024.0 * 1024.0),
                kld,
                row.stage.clone(),
            );
            match out.iter_mut().find(|s| &s.name == name) {
                Some(s) => s.points.push(point),
                None => out.push(PlotSeries {
                    name: name.clone(),
                    points: vec![point],
                }),
            }
        }
        out
    }
}

impl PlotSeries {
    /// The size this curve would have at mean KL divergence `kld`: linear in size against
    /// `ln(kld)` between the two neighbouring points (by size), `None` outside the curve's range
    /// (no extrapolation). Compare a point of another series with it to say "x % smaller at equal
    /// quality".
    pub fn size_at_kld(&self, kld: f64) -> Option<f64> {
        if kld <= 0.0 {
            return None;
        }
        let mut pts: Vec<(f64, f64)> = self
            .points
            .iter()
            .filter(|p| p.1 > 0.0)
            .map(|p| (p.0, p.1.ln()))
            .collect();
        pts.sort_by(|a, b| a.0.total_cmp(&b.0));
        let target = kld.ln();
        pts.windows(2).find_map(|w| {
            let ((x0, y0), (x1, y1)) = (w[0], w[1]);
            let (lo, hi) = (y0.min(y1), y0.max(y1));
            if !(lo..=hi).contains(&target) {
                return None;
            }
            if (y1 - y0).abs() < f64::EPSILON {
                return Some(x0.min(x1));
            }
            Some(x0 + (target - y0) * (x1 - x0) / (y1 - y0))
        })
    }
}

const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Draws `series` as an SVG at `path`: file size (MiB) across, mean KL divergence (log scale) up,
/// every point labelled. Smaller and lower is better. Written to a temporary file and renamed.
pub fn plot_svg(path: impl AsRef<Path>, title: &str, series: &[PlotSeries]) -> Result<()> {
    let path = path.as_ref();
    let plot_error = |reason: String| PipelineError::Plot {
        path: path.to_path_buf(),
        reason,
    };
    let points = || series.iter().flat_map(|s| s.points.iter());
    let positive = points().filter(|p| p.1 > 0.0 && p.0 > 0.0);
    let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
    for p in positive {
        (x0, x1, y0, y1) = (x0.min(p.0), x1.max(p.0), y0.min(p.1), y1.max(p.1));
    }
    if x0 > x1 {
        return Err(plot_error(
            "no point with a positive size and KL divergence".into(),
        ));
    }
    let (xpad, ypad) = (((x1 - x0) * 0.08).max(x1 * 0.02), 1.6);
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, (960, 640)).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_error(e.to_string()))?;
        let mut chart = ChartBuilder::on(&root)
            .caption(title, ("sans-serif", 22))
            .margin(16)
            .x_label_area_size(48)
            .y_label_area_size(72)
            .build_cartesian_2d(
                (x0 - xpad).max(0.0)..x1 + xpad,
                (y0 / ypad..y1 * ypad).log_scale(),
            )
            .map_err(|e| plot_error(e.to_string()))?;
        chart
            .configure_mesh()
            .x_desc("file size (MiB)")
            .y_desc("mean KL divergence from the original (log)")
            .y_label_formatter(&|v| format!("{v:.0e}"))
            .draw()
            .map_err(|e| plot_error(e.to_string()))?;
        for (i, s) in series.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let pts: Vec<(f64, f64)> = s
                .points
                .iter()
                .filter(|p| p.1 > 0.0)
                .map(|p| (p.0, p.1))
                .collect();
            chart
                .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))
                .map_err(|e| plot_error(e.to_string()))?
                .label(s.name.clone())
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
            chart
                .draw_series(pts.iter().map(|&p| Circle::new(p, 4, color.filled())))
                .map_err(|e| plot_error(e.to_string()))?;
            chart
                .draw_series(s.points.iter().filter(|p| p.1 > 0.0).map(|p| {
                    Text::new(
                        p.2.clone(),
                        (p.0, p.1),
                        ("sans-serif", 12).into_font().color(&color),
                    )
                }))
                .map_err(|e| plot_error(e.to_string()))?;
        }
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.9))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(|e| plot_error(e.to_string()))?;
        root.present().map_err(|e| plot_error(e.to_string()))?;
    }
    write_atomically(path, svg.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve() -> PlotSeries {
        PlotSeries {
            name: "presets".into(),
            points: vec![
                (100.0, 0.1_f64, "a".into()),
                (200.0, 0.01, "b".into()),
                (300.0, 0.001, "c".into()),
            ],
        }
    }

    #[test]
    fn size_at_kld_interpolates_in_log_kld() {
        let c = curve();
        assert_eq!(c.size_at_kld(0.01), Some(200.0));
        let mid = c.size_at_kld((0.1_f64 * 0.01).sqrt()).unwrap();
        assert!((mid - 150.0).abs() < 1e-9, "{mid}");
        assert_eq!(c.size_at_kld(1.0), None);
        assert_eq!(c.size_at_kld(1e-4), None);
        assert_eq!(c.size_at_kld(0.0), None);
    }

    #[test]
    fn the_plot_is_an_svg_with_every_label() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        let other = PlotSeries {
            name: "pipeline".into(),
            points: vec![(120.0, 0.02, "pruned + Q4_K_M".into())],
        };
        plot_svg(&path, "test", &[curve(), other]).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..80]);
        for label in ["presets", "pipeline", "pruned + Q4_K_M", "file size (MiB)"] {
            assert!(svg.contains(label), "missing {label}");
        }
    }

    #[test]
    fn a_plot_without_points_is_an_error_not_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.svg");
        assert!(plot_svg(&path, "t", &[]).is_err());
        assert!(!path.exists());
    }
}

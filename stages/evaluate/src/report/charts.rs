//! The report's charts, drawn by plotters' SVG backend into strings that the page inlines. Text
//! stays `<text>` for the browser to set (no font files needed), and plotters escapes it, so a
//! genre name from the CSV cannot inject markup.

use plotters::coord::Shift;
use plotters::prelude::*;
use stage_metrics::curves::Curve;
use stage_train::History;

/// A drawing failure, as text for the page (charts are drawn in memory; this is a bug if seen).
pub type ChartResult = Result<String, String>;

const FONT: &str = "sans-serif";
/// Series colours: blue, orange, green, red, purple, brown, pink, grey (Tableau 10).
pub const COLOURS: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
];

fn draw(
    size: (u32, u32),
    paint: impl FnOnce(&DrawingArea<SVGBackend<'_>, Shift>) -> Result<(), String>,
) -> ChartResult {
    let mut svg = String::new();
    {
        let root = SVGBackend::with_string(&mut svg, size).into_drawing_area();
        root.fill(&WHITE).map_err(|e| e.to_string())?;
        paint(&root)?;
        root.present().map_err(|e| e.to_string())?;
    }
    Ok(svg)
}

fn err(e: impl std::fmt::Display) -> String {
    e.to_string()
}

/// Train and validation loss per epoch (left axis) and validation macro-F1 (right axis).
pub fn training_curves(history: &History) -> ChartResult {
    let epochs = history.epochs.len().max(1) as f64;
    let max_loss = history
        .epochs
        .iter()
        .flat_map(|e| [e.train_loss, e.val_loss])
        .filter(|v| v.is_finite())
        .fold(0.0f64, f64::max)
        .max(1e-6)
        * 1.1;
    draw((720, 300), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(52)
            .right_y_label_area_size(52)
            .build_cartesian_2d(0.5..epochs + 0.5, 0.0..max_loss)
            .map_err(err)?
            .set_secondary_coord(0.5..epochs + 0.5, 0.0..1.0);
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("loss (BCE)")
            .x_labels(history.epochs.len().min(12))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .light_line_style(RGBColor(238, 238, 238))
            .label_style((FONT, 12))
            .draw()
            .map_err(err)?;
        chart
            .configure_secondary_axes()
            .y_desc("validation macro-F1")
            .label_style((FONT, 12))
            .draw()
            .map_err(err)?;
        let series = |get: fn(&stage_train::EpochRecord) -> f64| -> Vec<(f64, f64)> {
            history
                .epochs
                .iter()
                .map(|e| (e.epoch as f64, get(e)))
                .collect()
        };
        for (label, points, colour) in [
            ("train loss", series(|e| e.train_loss), COLOURS[0]),
            ("validation loss", series(|e| e.val_loss), COLOURS[1]),
        ] {
            chart
                .draw_series(LineSeries::new(points, colour.stroke_width(2)))
                .map_err(err)?
                .label(label)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        }
        let f1 = series(|e| e.val_macro_f1);
        chart
            .draw_secondary_series(LineSeries::new(f1, COLOURS[2].stroke_width(2)))
            .map_err(err)?
            .label("validation macro-F1 (right)")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], COLOURS[2]));
        let best = history.best_epoch as f64;
        chart
            .draw_series(std::iter::once(PathElement::new(
                vec![(best, 0.0), (best, max_loss)],
                BLACK.mix(0.35),
            )))
            .map_err(err)?
            .label(format!("kept epoch {}", history.best_epoch))
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], BLACK.mix(0.35)));
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::MiddleRight)
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font((FONT, 12))
            .draw()
            .map_err(err)
    })
}

/// One bar per genre and model (horizontal, F1 under each model's decision rule), the genre
/// labelled with its test support. `f1[model][genre]`: `None` for a genre absent from test.
///
/// A segmented axis has no fractional positions, so each genre takes one segment per model
/// (`genre * models + model`) and is labelled at its first.
pub fn genre_f1_bars(
    genres: &[String],
    support: &[usize],
    models: &[String],
    f1: &[Vec<Option<f64>>],
) -> ChartResult {
    let per = models.len().max(1);
    let rows = (genres.len() * per).max(1);
    let height = (genres.len() as u32 * (12 * per as u32 + 8) + 90).max(200);
    let labels: Vec<String> = genres
        .iter()
        .zip(support)
        .map(|(g, n)| format!("{g} ({n})"))
        .collect();
    draw((720, height), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(160)
            .build_cartesian_2d(0.0..1.0, (0..rows).into_segmented())
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc("F1 on test, under each model's decision rule")
            .y_labels(rows)
            .y_label_formatter(&|v| match v {
                SegmentValue::CenterOf(k) if k % per == 0 => {
                    labels.get(k / per).cloned().unwrap_or_default()
                }
                _ => String::new(),
            })
            .disable_y_mesh()
            .light_line_style(RGBColor(238, 238, 238))
            .label_style((FONT, 12))
            .draw()
            .map_err(err)?;
        // The legend is the page's, above the chart: inside, it would cover bars.
        for m in 0..models.len() {
            let colour = COLOURS[m % COLOURS.len()];
            chart
                .draw_series(f1[m].iter().enumerate().filter_map(|(g, value)| {
                    let k = g * per + m;
                    let mut bar = Rectangle::new(
                        [
                            (0.0, SegmentValue::Exact(k)),
                            ((*value)?, SegmentValue::Exact(k + 1)),
                        ],
                        colour.filled(),
                    );
                    bar.set_margin(1, 1, 0, 0);
                    Some(bar)
                }))
                .map_err(err)?;
            // An F1 of 0 has no bar to see: it is written, so it does not read as a genre the
            // model was never scored on.
            chart
                .draw_series(f1[m].iter().enumerate().filter_map(|(g, value)| {
                    let zero = value.is_some_and(|v| v < 0.005);
                    zero.then(|| {
                        Text::new(
                            "0",
                            (0.006, SegmentValue::Exact(g * per + m)),
                            (FONT, 10).into_font().color(&colour),
                        )
                    })
                }))
                .map_err(err)?;
        }
        Ok(())
    })
}

/// Curves of several genres on one chart: ROC (`roc = true`, with the chance diagonal) or
/// precision-recall. `curves`: (label, points).
pub fn curves(title_x: &str, title_y: &str, roc: bool, curves: &[(String, Curve)]) -> ChartResult {
    draw((460, 380), |root| {
        let mut chart = ChartBuilder::on(root)
            .margin(12)
            .x_label_area_size(36)
            .y_label_area_size(46)
            .build_cartesian_2d(0.0..1.0, 0.0..1.02)
            .map_err(err)?;
        chart
            .configure_mesh()
            .x_desc(title_x)
            .y_desc(title_y)
            .light_line_style(RGBColor(238, 238, 238))
            .label_style((FONT, 12))
            .draw()
            .map_err(err)?;
        if roc {
            chart
                .draw_series(LineSeries::new(
                    [(0.0, 0.0), (1.0, 1.0)],
                    BLACK.mix(0.3).stroke_width(1),
                ))
                .map_err(err)?;
        }
        for (i, (label, points)) in curves.iter().enumerate() {
            let colour = COLOURS[i % COLOURS.len()];
            // Precision-recall is a step function: precision holds until recall moves on.
            let drawn: Vec<(f64, f64)> = if roc {
                points.clone()
            } else {
                points
                    .windows(2)
                    .flat_map(|w| [(w[0].0, w[1].1), w[1]])
                    .collect()
            };
            chart
                .draw_series(LineSeries::new(drawn, colour.stroke_width(2)))
                .map_err(err)?
                .label(label.clone())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], colour));
        }
        chart
            .configure_series_labels()
            .position(if roc {
                SeriesLabelPosition::LowerRight
            } else {
                SeriesLabelPosition::LowerLeft
            })
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .label_font((FONT, 11))
            .draw()
            .map_err(err)
    })
}

/// A genre-by-genre heatmap of `counts` (row-major, `genres x genres`): cell (a, b) is how many
/// test movies have both genres; the diagonal is each genre's own count.
pub fn co_occurrence(title: &str, genres: &[String], counts: &[usize]) -> ChartResult {
    let n = genres.len().max(1);
    let cell = 18u32;
    let side = n as u32 * cell;
    let max = counts.iter().copied().max().unwrap_or(0).max(1) as f64;
    let short: Vec<String> = genres
        .iter()
        .map(|g| g.chars().take(11).collect())
        .collect();
    draw((side + 140, side + 130), |root| {
        let mut chart = ChartBuilder::on(root)
            .caption(title, (FONT, 14))
            .margin(8)
            .x_label_area_size(90)
            .y_label_area_size(90)
            .build_cartesian_2d((0..n).into_segmented(), (0..n).into_segmented())
            .map_err(err)?;
        let label = |v: &SegmentValue<usize>| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                short.get(*i).cloned().unwrap_or_default()
            }
            SegmentValue::Last => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_labels(n)
            .y_labels(n)
            .x_label_formatter(&label)
            .y_label_formatter(&label)
            .x_label_style((FONT, 10).into_font().transform(FontTransform::Rotate90))
            .y_label_style((FONT, 10))
            .draw()
            .map_err(err)?;
        chart
            .draw_series((0..n).flat_map(|a| {
                (0..n).map(move |b| {
                    let value = counts.get(a * n + b).copied().unwrap_or(0) as f64;
                    // White to dark blue, by the share of the largest count.
                    let t = (value / max).sqrt();
                    let shade = |from: f64, to: f64| (from + (to - from) * t) as u8;
                    let colour =
                        RGBColor(shade(255.0, 8.0), shade(255.0, 69.0), shade(255.0, 148.0));
                    Rectangle::new(
                        [
                            (SegmentValue::Exact(a), SegmentValue::Exact(b)),
                            (SegmentValue::Exact(a + 1), SegmentValue::Exact(b + 1)),
                        ],
                        colour.filled(),
                    )
                })
            }))
            .map_err(err)?;
        Ok(())
    })
}

//! Plots with plotters, each as SVG and PNG.
//!
//! Text is drawn with plotters' `ab_glyph` renderer from a TrueType file
//! registered at run time, so no system font library is needed: by default
//! DejaVu Sans from Debian's `fonts-dejavu-core`
//! (`/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf`, installed by
//! `.ci/fonts.sh`), or the file named by `GREENLIGHT_SIM_FONT`. Without a
//! font, plots are drawn without text (curves and grid only) and a warning
//! says so.

use crate::sim::{RunResult, Summary};
use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;
use std::sync::OnceLock;

/// Where the font is looked for when `GREENLIGHT_SIM_FONT` is not set.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const SIZE: (u32, u32) = (1000, 600);

/// Registers the font once; whether text can be drawn.
pub fn fonts_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        let path = std::env::var("GREENLIGHT_SIM_FONT").unwrap_or_else(|_| DEFAULT_FONT.into());
        let Ok(bytes) = std::fs::read(&path) else {
            eprintln!("warning: no font at {path}: plots are drawn without text (set GREENLIGHT_SIM_FONT or install fonts-dejavu-core)");
            return false;
        };
        // Registered fonts live as long as the program: leak the one copy.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

/// One curve.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend.
    pub label: String,
    /// Colour.
    pub colour: RGBColor,
    /// Points.
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct Chart {
    /// Title.
    pub title: String,
    /// X axis description.
    pub x: String,
    /// Y axis description.
    pub y: String,
    /// Curves.
    pub series: Vec<Series>,
}

impl Chart {
    /// Writes `<stem>.svg` and `<stem>.png`.
    pub fn write(&self, stem: &Path) -> anyhow::Result<()> {
        let labels = fonts_available();
        let svg = stem.with_extension("svg");
        let png = stem.with_extension("png");
        self.draw(SVGBackend::new(&svg, SIZE).into_drawing_area(), labels)
            .map_err(|e| anyhow!("cannot draw {}: {e}", svg.display()))?;
        self.draw(BitMapBackend::new(&png, SIZE).into_drawing_area(), labels)
            .map_err(|e| anyhow!("cannot draw {}: {e}", png.display()))?;
        Ok(())
    }

    fn draw<DB: DrawingBackend>(
        &self,
        root: DrawingArea<DB, Shift>,
        labels: bool,
    ) -> Result<(), DrawingAreaErrorKind<DB::ErrorType>> {
        root.fill(&WHITE)?;
        let points = self.series.iter().flat_map(|s| &s.points);
        let (mut x0, mut x1, mut y1) = (f64::MAX, f64::MIN, 0.0f64);
        for &(x, y) in points {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
        if x0 >= x1 {
            x0 = 0.0;
            x1 = x1.max(1.0);
        }
        let y1 = if y1 > 0.0 { y1 * 1.05 } else { 1.0 };
        let mut builder = ChartBuilder::on(&root);
        builder.margin(20);
        if labels {
            builder
                .caption(&self.title, ("sans-serif", 24))
                .x_label_area_size(45)
                .y_label_area_size(70);
        }
        let mut chart = builder.build_cartesian_2d(x0..x1, 0.0..y1)?;
        if labels {
            chart
                .configure_mesh()
                .x_desc(&self.x)
                .y_desc(&self.y)
                .label_style(("sans-serif", 14))
                .draw()?;
        }
        for s in &self.series {
            let colour = s.colour;
            let line = chart.draw_series(LineSeries::new(
                s.points.iter().copied(),
                colour.stroke_width(2),
            ))?;
            if labels {
                line.label(&s.label).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            }
        }
        if labels {
            chart
                .configure_series_labels()
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .label_font(("sans-serif", 14))
                .position(SeriesLabelPosition::UpperRight)
                .draw()?;
        }
        root.present()
    }
}

fn by_day(run: &RunResult, f: impl Fn(&crate::sim::DailyRecord) -> u64) -> Vec<(f64, f64)> {
    run.days
        .iter()
        .map(|d| (f64::from(d.day), f(d) as f64))
        .collect()
}

/// New infections per day, with the app and (if run) without.
pub fn epidemic_curves(
    stem: &Path,
    with_app: &RunResult,
    without: Option<&RunResult>,
) -> anyhow::Result<()> {
    let mut series = vec![Series {
        label: format!(
            "with the app ({:.0} % adoption)",
            with_app.scenario.app.adoption * 100.0
        ),
        colour: RGBColor(0, 110, 190),
        points: by_day(with_app, |d| d.new_infections),
    }];
    if let Some(base) = without {
        series.push(Series {
            label: "without the app".into(),
            colour: RGBColor(200, 40, 40),
            points: by_day(base, |d| d.new_infections),
        });
    }
    Chart {
        title: format!("{}: new infections per day", with_app.scenario.name),
        x: "day".into(),
        y: "new infections".into(),
        series,
    }
    .write(stem)
}

/// App users by colour, and people staying home, over time.
pub fn colours(stem: &Path, run: &RunResult) -> anyhow::Result<()> {
    Chart {
        title: format!("{}: phones by colour", run.scenario.name),
        x: "day".into(),
        y: "people".into(),
        series: vec![
            Series {
                label: "yellow".into(),
                colour: RGBColor(220, 170, 0),
                points: by_day(run, |d| d.yellow),
            },
            Series {
                label: "red".into(),
                colour: RGBColor(200, 40, 40),
                points: by_day(run, |d| d.red),
            },
            Series {
                label: "in quarantine after a notification".into(),
                colour: RGBColor(120, 60, 160),
                points: by_day(run, |d| d.quarantined),
            },
            Series {
                label: "isolating after a positive test".into(),
                colour: RGBColor(90, 90, 90),
                points: by_day(run, |d| d.isolating),
            },
        ],
    }
    .write(stem)
}

/// One comparative plot of a sweep: infections, notifications and
/// quarantine, per 100 people, against the swept parameter.
pub fn sweep(stem: &Path, parameter: &str, points: &[(f64, Summary)]) -> anyhow::Result<()> {
    let per_100 = |f: &dyn Fn(&Summary) -> u64| -> Vec<(f64, f64)> {
        points
            .iter()
            .map(|(x, s)| (*x, f(s) as f64 * 100.0 / s.agents.max(1) as f64))
            .collect()
    };
    Chart {
        title: format!("sweep over {parameter}"),
        x: parameter.into(),
        y: "per 100 people".into(),
        series: vec![
            Series {
                label: "infected".into(),
                colour: RGBColor(200, 40, 40),
                points: per_100(&|s| s.infections),
            },
            Series {
                label: "notified".into(),
                colour: RGBColor(220, 170, 0),
                points: per_100(&|s| s.notifications),
            },
            Series {
                label: "quarantine person-days / 10".into(),
                colour: RGBColor(120, 60, 160),
                points: per_100(&|s| s.quarantine_person_days / 10),
            },
        ],
    }
    .write(stem)
}

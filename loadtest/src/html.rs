//! The HTML report: one self-contained file (inline CSS and SVG, no script, nothing fetched)
//! with the verdict, the key figures, plots over time (sessions open, gateway RSS and CPU,
//! messages per second, latency, errors), latency histograms and CDFs, and the tables.

use std::fmt::Write as _;

use crate::{progress::thousands, report::Report};

const PALETTE: [&str; 10] =
    ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];

const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 270.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 30.0;
const BOTTOM: f64 = 42.0;

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    pub points: Vec<(f64, f64)>,
}

/// A line chart.
#[derive(Debug, Clone)]
pub struct Chart<'a> {
    pub title: &'a str,
    pub x_label: &'a str,
    pub y_label: &'a str,
    pub log_x: bool,
    /// Draw steps (for a CDF) instead of straight segments.
    pub step: bool,
    pub y_max: Option<f64>,
    pub series: Vec<Series>,
    /// Vertical markers: `(x, label)`.
    pub markers: Vec<(f64, String)>,
    pub format_y: fn(f64) -> String,
}

/// "Nice" ticks (1, 2, 5 × 10ⁿ) covering `[min, max]`.
pub fn nice_ticks(min: f64, max: f64, target: usize) -> Vec<f64> {
    if !(min.is_finite() && max.is_finite()) || max <= min {
        return vec![min];
    }
    let raw = (max - min) / target.max(1) as f64;
    let magnitude = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|s| *s >= raw).unwrap_or(10.0 * magnitude);
    let mut ticks = Vec::new();
    let mut t = (min / step).ceil() * step;
    while t <= max + step * 1e-9 {
        ticks.push(if t.abs() < step * 1e-9 { 0.0 } else { t });
        t += step;
    }
    ticks
}

/// Ticks of a log axis: powers of ten, with 2 and 5 between when the range is narrow.
pub fn log_ticks(min: f64, max: f64) -> Vec<f64> {
    if min <= 0.0 || max <= min {
        return vec![min.max(f64::MIN_POSITIVE)];
    }
    let (lo, hi) = (min.log10().floor() as i32, max.log10().ceil() as i32);
    let multipliers: &[f64] = if hi - lo <= 3 { &[1.0, 2.0, 5.0] } else { &[1.0] };
    let mut ticks = Vec::new();
    for e in lo..=hi {
        for m in multipliers {
            let t = m * 10f64.powi(e);
            if t >= min * 0.999 && t <= max * 1.001 {
                ticks.push(t);
            }
        }
    }
    ticks
}

/// Short numbers: 1.2k, 3.4M, 0.25.
pub fn short(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.1}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.1}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.0}k", v / 1e3)
    } else if a >= 1e3 {
        format!("{:.1}k", v / 1e3)
    } else if a >= 10.0 || a == 0.0 {
        format!("{v:.0}")
    } else if a >= 1.0 {
        format!("{v:.1}")
    } else if a >= 0.01 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

fn mib_label(v: f64) -> String {
    format!("{} MiB", short(v))
}

fn pct_label(v: f64) -> String {
    format!("{v:.0} %")
}

fn fraction_label(v: f64) -> String {
    format!("{:.0} %", v * 100.0)
}

/// Where each legend entry goes: `(x, baseline y, name)`, wrapping rows; none for a single
/// unnamed series.
fn legend_layout(series: &[Series]) -> Vec<(f64, f64, String)> {
    if series.len() == 1 && series[0].name.is_empty() || series.is_empty() {
        return Vec::new();
    }
    let mut out = Vec::new();
    let (mut x, mut y) = (LEFT, TOP);
    for s in series {
        let width = 26.0 + 6.2 * s.name.chars().count() as f64;
        if x + width > WIDTH - RIGHT && x > LEFT {
            x = LEFT;
            y += 14.0;
        }
        out.push((x, y, s.name.clone()));
        x += width;
    }
    out
}

/// Renders a chart as an SVG element.
pub fn line_chart(c: &Chart) -> String {
    let points: Vec<(f64, f64)> = c
        .series
        .iter()
        .flat_map(|s| s.points.iter().copied())
        .filter(|(x, y)| x.is_finite() && y.is_finite() && (!c.log_x || *x > 0.0))
        .collect();
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}">"#,
        esc(c.title)
    );
    let _ = write!(svg, r#"<text x="{LEFT}" y="18" class="title">{}</text>"#, esc(c.title));
    if points.is_empty() {
        let _ =
            write!(svg, r#"<text x="{}" y="{}" class="empty">no data</text></svg>"#, WIDTH / 2.0 - 30.0, HEIGHT / 2.0);
        return svg;
    }
    let (mut x_min, mut x_max) = points.iter().fold((f64::MAX, f64::MIN), |(a, b), p| (a.min(p.0), b.max(p.0)));
    if x_max <= x_min {
        x_max = x_min + 1.0;
        if c.log_x {
            x_max = x_min * 10.0;
        }
    }
    let y_data_max = points.iter().map(|p| p.1).fold(0.0, f64::max);
    let y_min = points.iter().map(|p| p.1).fold(0.0, f64::min);
    let mut y_max = c.y_max.unwrap_or(if y_data_max > y_min { y_data_max * 1.05 } else { y_min + 1.0 });
    let y_ticks = nice_ticks(y_min, y_max, 5);
    y_max = y_max.max(*y_ticks.last().unwrap_or(&y_max));
    let x_ticks = if c.log_x {
        x_min = x_min.max(1e-6);
        log_ticks(x_min, x_max)
    } else {
        nice_ticks(x_min, x_max, 8)
    };
    // The legend gets its own rows between the title and the plot.
    let legend = legend_layout(&c.series);
    let top = TOP + legend.last().map_or(0.0, |l| l.1 - TOP + 8.0);
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - top - BOTTOM);
    let sx = |x: f64| {
        let f = if c.log_x {
            (x.max(x_min).log10() - x_min.log10()) / (x_max.log10() - x_min.log10())
        } else {
            (x - x_min) / (x_max - x_min)
        };
        LEFT + f.clamp(0.0, 1.0) * plot_w
    };
    let sy = |y: f64| top + plot_h - ((y - y_min) / (y_max - y_min)).clamp(0.0, 1.0) * plot_h;
    // Grid and axes.
    for t in &y_ticks {
        let y = sy(*t);
        let _ = write!(
            svg,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="ytick">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            esc(&(c.format_y)(*t))
        );
    }
    for t in &x_ticks {
        let x = sx(*t);
        let _ = write!(
            svg,
            r#"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" class="grid"/><text x="{x:.1}" y="{:.1}" class="xtick">{}</text>"#,
            top + plot_h,
            top + plot_h + 15.0,
            esc(&short(*t))
        );
    }
    let _ = write!(
        svg,
        r#"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{plot_h}" class="frame"/><text x="{:.1}" y="{:.1}" class="xlabel">{}</text><text x="14" y="{:.1}" class="ylabel" transform="rotate(-90 14 {:.1})">{}</text>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0,
        esc(c.x_label),
        top + plot_h / 2.0,
        top + plot_h / 2.0,
        esc(c.y_label)
    );
    for (x, label) in &c.markers {
        if *x < x_min || *x > x_max {
            continue;
        }
        let px = sx(*x);
        let _ = write!(
            svg,
            r#"<line x1="{px:.1}" y1="{top}" x2="{px:.1}" y2="{:.1}" class="marker"><title>{}</title></line><text x="{:.1}" y="{:.1}" class="mlabel">{}</text>"#,
            top + plot_h,
            esc(label),
            px + 2.0,
            top + 10.0,
            esc(label)
        );
    }
    // Lines.
    for (i, s) in c.series.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let mut d = String::new();
        let mut previous: Option<(f64, f64)> = None;
        for &(x, y) in s.points.iter().filter(|(x, y)| x.is_finite() && y.is_finite() && (!c.log_x || *x > 0.0)) {
            let (px, py) = (sx(x), sy(y));
            match previous {
                None => {
                    let _ = write!(d, "M{px:.1},{py:.1}");
                }
                Some((_, prev_y)) if c.step => {
                    let _ = write!(d, "H{px:.1}V{py:.1}");
                    let _ = prev_y;
                }
                Some(_) => {
                    let _ = write!(d, "L{px:.1},{py:.1}");
                }
            }
            previous = Some((px, py));
        }
        let _ = write!(
            svg,
            r#"<path d="{d}" fill="none" stroke="{color}" stroke-width="1.6"><title>{}</title></path>"#,
            esc(&s.name)
        );
        if s.points.len() == 1
            && let Some((px, py)) = previous
        {
            let _ = write!(svg, r#"<circle cx="{px:.1}" cy="{py:.1}" r="3" fill="{color}"/>"#);
        }
    }
    // Legend.
    for (i, (x, y, name)) in legend.iter().enumerate() {
        let color = PALETTE[i % PALETTE.len()];
        let _ = write!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="12" height="4" fill="{color}"/><text x="{:.1}" y="{y:.1}" class="legend">{}</text>"#,
            y - 4.0,
            x + 16.0,
            esc(name)
        );
    }
    svg.push_str("</svg>");
    svg
}

/// A histogram as bars over log-spaced bins `(from, to, count)`.
pub fn histogram_chart(title: &str, x_label: &str, bins: &[(f64, f64, u64)]) -> String {
    let mut svg = String::new();
    let _ = write!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" aria-label="{}"><text x="{LEFT}" y="18" class="title">{}</text>"#,
        esc(title),
        esc(title)
    );
    let bins: Vec<&(f64, f64, u64)> = bins.iter().filter(|b| b.0 > 0.0 && b.1 > b.0).collect();
    if bins.is_empty() {
        let _ =
            write!(svg, r#"<text x="{}" y="{}" class="empty">no data</text></svg>"#, WIDTH / 2.0 - 30.0, HEIGHT / 2.0);
        return svg;
    }
    let x_min = bins.first().map_or(1.0, |b| b.0);
    let x_max = bins.last().map_or(10.0, |b| b.1);
    let c_max = bins.iter().map(|b| b.2).max().unwrap_or(1).max(1) as f64;
    let y_ticks = nice_ticks(0.0, c_max * 1.05, 5);
    let y_max = y_ticks.last().copied().unwrap_or(c_max).max(c_max);
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    let sx = |x: f64| {
        LEFT + ((x.log10() - x_min.log10()) / (x_max.log10() - x_min.log10()).max(1e-9)).clamp(0.0, 1.0) * plot_w
    };
    let sy = |y: f64| TOP + plot_h - (y / y_max).clamp(0.0, 1.0) * plot_h;
    for t in &y_ticks {
        let y = sy(*t);
        let _ = write!(
            svg,
            r#"<line x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" class="grid"/><text x="{:.1}" y="{:.1}" class="ytick">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            short(*t)
        );
    }
    for t in log_ticks(x_min, x_max) {
        let x = sx(t);
        let _ = write!(
            svg,
            r#"<line x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}" class="grid"/><text x="{x:.1}" y="{:.1}" class="xtick">{}</text>"#,
            TOP + plot_h,
            TOP + plot_h + 15.0,
            short(t)
        );
    }
    for b in &bins {
        if b.2 == 0 {
            continue;
        }
        let (x0, x1) = (sx(b.0), sx(b.1));
        let y = sy(b.2 as f64);
        let _ = write!(
            svg,
            r#"<rect x="{x0:.1}" y="{y:.1}" width="{:.1}" height="{:.1}" class="bar"><title>{} – {} ms: {}</title></rect>"#,
            (x1 - x0 - 0.5).max(0.5),
            TOP + plot_h - y,
            short(b.0),
            short(b.1),
            b.2
        );
    }
    let _ = write!(
        svg,
        r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/><text x="{:.1}" y="{:.1}" class="xlabel">{}</text><text x="14" y="{:.1}" class="ylabel" transform="rotate(-90 14 {:.1})">messages</text></svg>"#,
        LEFT + plot_w / 2.0,
        HEIGHT - 6.0,
        esc(x_label),
        TOP + plot_h / 2.0,
        TOP + plot_h / 2.0
    );
    svg
}

const STYLE: &str = r#"
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1560px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:17px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.verdict{display:inline-block;padding:2px 10px;border-radius:4px;color:#fff;font-weight:600;margin-left:8px}
.pass{background:#2e7d32}.fail{background:#c62828}
.meta{color:#666;font-size:13px} code{background:#f4f4f4;padding:1px 4px;border-radius:3px;word-break:break-all}
table{border-collapse:collapse;margin:6px 0 12px;font-size:13px} th,td{border:1px solid #ddd;padding:3px 8px;text-align:right} th{background:#f6f6f6} td.l,th.l{text-align:left}
.charts{display:flex;flex-wrap:wrap;gap:12px} .charts svg{border:1px solid #e4e4e4;border-radius:4px;background:#fff;max-width:100%;height:auto}
svg text{font-family:system-ui,sans-serif;font-size:11px;fill:#444} svg .title{font-size:13px;font-weight:600;fill:#222}
svg .ytick{text-anchor:end} svg .xtick{text-anchor:middle} svg .xlabel{text-anchor:middle} svg .ylabel{text-anchor:middle}
svg .grid{stroke:#eee} svg .frame{fill:none;stroke:#bbb} svg .bar{fill:#1f77b4;opacity:.85} svg .empty{fill:#999}
svg .marker{stroke:#999;stroke-dasharray:3 3} svg .mlabel{font-size:9px;fill:#888} svg .legend{font-size:11px}
ul.failures li{color:#c62828} pre{background:#f7f7f7;padding:8px;overflow:auto;font-size:12px}
"#;

fn row(out: &mut String, cells: &[String]) {
    out.push_str("<tr>");
    for (i, c) in cells.iter().enumerate() {
        let class = if i == 0 { r#" class="l""# } else { "" };
        let _ = write!(out, "<td{class}>{}</td>", esc(c));
    }
    out.push_str("</tr>");
}

fn header(out: &mut String, cells: &[&str]) {
    out.push_str("<table><tr>");
    for (i, c) in cells.iter().enumerate() {
        let class = if i == 0 { r#" class="l""# } else { "" };
        let _ = write!(out, "<th{class}>{}</th>", esc(c));
    }
    out.push_str("</tr>");
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(|m| format!("{m:.1}")).unwrap_or_else(|| "—".into())
}

fn mib(v: Option<u64>) -> String {
    v.map(|b| format!("{:.1}", b as f64 / 1048576.0)).unwrap_or_else(|| "—".into())
}

/// Rows of a table at most (the JSON report has them all).
const MAX_ROWS: usize = 300;

/// Every k-th element so that at most about `max` remain (the last always kept).
pub fn downsample<T: Clone>(items: &[T], max: usize) -> Vec<T> {
    let step = items.len().div_ceil(max.max(1)).max(1);
    let last = items.len().saturating_sub(1);
    items.iter().enumerate().filter(|(i, _)| i % step == 0 || *i == last).map(|(_, x)| x.clone()).collect()
}

/// The whole HTML page of a report.
pub fn render(r: &Report) -> String {
    let mut o = String::with_capacity(256 * 1024);
    let verdict = if r.passed {
        r#"<span class="verdict pass">PASS</span>"#
    } else {
        r#"<span class="verdict fail">FELL SHORT</span>"#
    };
    let _ = write!(
        o,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>pushgate-loadtest {} — {}</title><style>{STYLE}</style></head><body>",
        esc(&r.scenario),
        if r.passed { "pass" } else { "fell short" }
    );
    let _ = write!(
        o,
        "<h1>pushgate-loadtest {}{verdict}</h1><div class=\"meta\">run <code>{}</code> · started {} ms since epoch · {:.1} s · version {}<br>command: <code>{}</code></div>",
        esc(&r.scenario),
        esc(&r.run_id),
        r.started_unix_ms,
        r.seconds,
        esc(&r.version),
        esc(&r.command.join(" "))
    );
    if !r.failures.is_empty() {
        o.push_str("<h2>Why it fell short</h2><ul class=\"failures\">");
        for f in &r.failures {
            let _ = write!(o, "<li>{}</li>", esc(f));
        }
        o.push_str("</ul>");
    }
    if !r.notes.is_empty() {
        o.push_str("<ul>");
        for n in &r.notes {
            let _ = write!(o, "<li>{}</li>", esc(n));
        }
        o.push_str("</ul>");
    }

    // Key figures.
    o.push_str("<h2>Summary</h2>");
    header(&mut o, &["figure", "value"]);
    let s = &r.sessions;
    let mut figures: Vec<(String, String)> = vec![
        ("gateway nodes".into(), format!("{} ({:?})", r.setup.nodes.len(), r.setup.mode).to_lowercase()),
        ("worker processes".into(), r.setup.workers.len().to_string()),
    ];
    if s.requested > 0 {
        figures.extend([
            ("sessions opened / asked".into(), format!("{} / {}", thousands(s.opened), thousands(s.requested))),
            ("peak open / open at end".into(), format!("{} / {}", thousands(s.peak_open), thousands(s.open_at_end))),
            (
                "connect time, handshakes/s".into(),
                format!("{:.2} s, {}", r.connect_seconds, thousands(r.handshakes_per_s as u64)),
            ),
            ("connect errors".into(), s.connect_errors.to_string()),
            ("unexpected closes".into(), s.unexpected_closes.to_string()),
            ("reconnects".into(), s.reconnects.to_string()),
            ("messages received".into(), thousands(s.received)),
            ("error / gap frames".into(), format!("{} / {}", s.error_frames, s.gap_frames)),
        ]);
    }
    if let Some(per) = r.rss_bytes_per_session {
        figures.push(("gateway RSS per session (idle − before)".into(), format!("{per:.0} B")));
    }
    if let Some(d) = &r.durable {
        figures.extend([
            (
                "durable accepted / received in order".into(),
                format!("{} / {}", thousands(d.accepted), thousands(d.received_in_order)),
            ),
            (
                "durable lost / seq gaps / duplicates".into(),
                format!("{} / {} / {}", d.loss.lost, d.seq_gaps, d.duplicates),
            ),
        ]);
    }
    if let Some(p) = &r.publish {
        figures.extend([
            ("publish rate achieved / asked".into(), format!("{:.0}/s / {:.0}/s", p.achieved_rate, p.requested_rate)),
            (
                "publishes accepted / refused / failed".into(),
                format!("{} / {} / {}", thousands(p.summary.accepted), p.summary.refused, p.summary.errors),
            ),
            (
                "publish answer p50 / p99 / max".into(),
                format!(
                    "{:.2} / {:.2} / {:.2} ms",
                    p.summary.answer.p50_ms, p.summary.answer.p99_ms, p.summary.answer.max_ms
                ),
            ),
        ]);
    }
    for (name, value) in figures {
        row(&mut o, &[name, value]);
    }
    o.push_str("</table>");

    // Over time.
    // A day at one sample a second is 86,400 points: plot at most ~1,500 per line.
    let timeline = downsample(&r.timeline, 1500);
    let t: Vec<f64> = timeline.iter().map(|p| p.t_s).collect();
    let markers: Vec<(f64, String)> = r.events.clone();
    let series = |name: &str, f: &dyn Fn(&crate::fleet::Sample) -> Option<f64>| Series {
        name: name.into(),
        points: timeline.iter().zip(&t).filter_map(|(p, x)| f(p).map(|y| (*x, y))).collect(),
    };
    let chart = |title: &'static str, y_label: &'static str, series: Vec<Series>, format_y: fn(f64) -> String| {
        line_chart(&Chart {
            title,
            x_label: "seconds",
            y_label,
            log_x: false,
            step: false,
            y_max: None,
            series,
            markers: markers.clone(),
            format_y,
        })
    };
    o.push_str("<h2>Over time</h2><div class=\"charts\">");
    o.push_str(&chart("Sessions open", "sessions", vec![series("open", &|p| Some(p.open as f64))], short));
    let gateway_rss: Vec<Series> = r
        .gateways
        .iter()
        .enumerate()
        .map(|(i, g)| series(&g.label, &|p| p.gateway_rss.get(i).copied().flatten().map(|b| b as f64 / 1048576.0)))
        .chain(std::iter::once(series("load workers (all)", &|p| Some(p.workers_rss as f64 / 1048576.0))))
        .collect();
    o.push_str(&chart("Resident memory (RSS)", "MiB", gateway_rss, mib_label));
    let gateway_cpu: Vec<Series> = r
        .gateways
        .iter()
        .enumerate()
        .map(|(i, g)| series(&g.label, &|p| p.gateway_cpu_pct.get(i).copied().flatten()))
        .collect();
    o.push_str(&chart("Gateway CPU (100 % = one core)", "CPU", gateway_cpu, pct_label));
    o.push_str(&chart(
        "Rates",
        "per second",
        vec![
            series("messages received/s", &|p| Some(p.received_per_s)),
            series("published/s", &|p| Some(p.published_per_s)),
            series("connects/s", &|p| Some(p.connects_per_s)),
        ],
        short,
    ));
    o.push_str(&chart(
        "Delivery latency per interval",
        "ms",
        vec![series("p50", &|p| p.latency_p50_ms), series("p99", &|p| p.latency_p99_ms)],
        short,
    ));
    o.push_str(&chart(
        "Errors (cumulative)",
        "count",
        vec![
            series("unexpected closes", &|p| Some(p.unexpected_closes as f64)),
            series("connect errors", &|p| Some(p.connect_errors as f64)),
            series("seq gaps + duplicates", &|p| Some(p.seq_problems as f64)),
            series("publish failures", &|p| Some(p.publish_failures as f64)),
            series("error frames", &|p| Some(p.error_frames as f64)),
            series("gap frames", &|p| Some(p.gap_frames as f64)),
        ],
        short,
    ));
    o.push_str("</div>");

    // Latency.
    if !r.latency.is_empty() {
        o.push_str("<h2>Latency (publish timestamp → receive)</h2>");
        header(&mut o, &["kind", "messages", "mean ms", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"]);
        for (kind, l) in &r.latency {
            let s = &l.summary;
            row(
                &mut o,
                &[
                    kind.clone(),
                    thousands(s.count as u64),
                    format!("{:.2}", s.mean_ms),
                    format!("{:.2}", s.p50_ms),
                    format!("{:.2}", s.p90_ms),
                    format!("{:.2}", s.p99_ms),
                    format!("{:.2}", s.p999_ms),
                    format!("{:.2}", s.max_ms),
                ],
            );
        }
        o.push_str("</table><div class=\"charts\">");
        let cdf: Vec<Series> = r
            .latency
            .iter()
            .map(|(kind, l)| Series {
                name: kind.clone(),
                points: l.cdf.iter().map(|&(ms, f)| (ms.max(0.001), f)).collect(),
            })
            .collect();
        o.push_str(&line_chart(&Chart {
            title: "Latency CDF",
            x_label: "ms (log)",
            y_label: "fraction of messages ≤",
            log_x: true,
            step: true,
            y_max: Some(1.0),
            series: cdf,
            markers: Vec::new(),
            format_y: fraction_label,
        }));
        for (kind, l) in &r.latency {
            o.push_str(&histogram_chart(&format!("Latency histogram: {kind}"), "ms (log)", &l.histogram));
        }
        o.push_str("</div>");
    }

    // Tracked messages.
    let tracked: Vec<_> = r.broadcasts.iter().chain(&r.fanout).collect();
    if !tracked.is_empty() {
        o.push_str("<h2>Fan-out: tracked messages</h2>");
        header(
            &mut o,
            &[
                "message",
                "kind",
                "sent at s",
                "delivered",
                "expected",
                "p50 ms",
                "p99 ms",
                "last ms",
                "publish answer ms",
                "CPU µs/frame",
            ],
        );
        let shown = tracked.len().min(MAX_ROWS);
        let more = tracked.len() - shown;
        for t in tracked.into_iter().take(shown) {
            row(
                &mut o,
                &[
                    t.id.clone(),
                    t.kind.clone(),
                    format!("{:.1}", t.sent_at_s),
                    thousands(t.delivered),
                    thousands(t.expected),
                    format!("{:.2}", t.latency.p50_ms),
                    format!("{:.2}", t.latency.p99_ms),
                    format!("{:.2}", t.latency.max_ms),
                    format!("{:.2}", t.publish_answer_ms),
                    t.cpu_us_per_frame.map(|c| format!("{c:.2}")).unwrap_or_else(|| "—".into()),
                ],
            );
        }
        o.push_str("</table>");
        if more > 0 {
            let _ = write!(o, "<p>… and {more} more in the JSON report.</p>");
        }
    }

    if !r.storms.is_empty() {
        o.push_str("<h2>Reconnect storms</h2>");
        header(
            &mut o,
            &[
                "storm",
                "method",
                "at s",
                "sessions",
                "down",
                "back",
                "resumed",
                "all back ms",
                "all resumed ms",
                "reconnect p50 ms",
                "reconnect p99 ms",
                "connect errors",
                "messages accepted",
            ],
        );
        for st in &r.storms {
            row(
                &mut o,
                &[
                    st.id.to_string(),
                    st.method.clone(),
                    format!("{:.1}", st.started_at_s),
                    st.sessions.to_string(),
                    st.down.to_string(),
                    st.reconnected.to_string(),
                    st.resumed.to_string(),
                    opt_ms(st.all_back_ms),
                    opt_ms(st.all_resumed_ms),
                    format!("{:.1}", st.reconnect.p50_ms),
                    format!("{:.1}", st.reconnect.p99_ms),
                    st.connect_errors.to_string(),
                    st.messages_accepted.to_string(),
                ],
            );
        }
        o.push_str("</table>");
    }

    if !r.gateways.is_empty() {
        o.push_str("<h2>Gateway processes</h2>");
        header(
            &mut o,
            &[
                "gateway",
                "RSS start MiB",
                "idle MiB",
                "peak MiB",
                "end MiB",
                "CPU s",
                "CPU avg %",
                "CPU peak %",
                "exited at s",
            ],
        );
        for g in &r.gateways {
            row(
                &mut o,
                &[
                    g.label.clone(),
                    mib(g.rss_start),
                    mib(g.rss_idle),
                    mib(g.rss_peak),
                    mib(g.rss_end),
                    format!("{:.1}", g.cpu_seconds),
                    format!("{:.0}", g.cpu_avg_pct),
                    format!("{:.0}", g.cpu_peak_pct),
                    opt_ms(g.exited_at_s),
                ],
            );
        }
        o.push_str("</table>");
    }

    o.push_str("<h2>Load workers</h2>");
    header(&mut o, &["worker", "sessions", "source addresses", "peak RSS MiB"]);
    for w in &r.setup.workers {
        row(&mut o, &[w.index.to_string(), thousands(w.sessions as u64), w.source_ips.clone(), mib(Some(w.rss_peak))]);
    }
    o.push_str("</table>");
    if !s.close_codes.is_empty() || !s.connect_error_kinds.is_empty() || !s.error_codes.is_empty() {
        o.push_str("<h2>Closes and errors</h2>");
        header(&mut o, &["what", "count"]);
        for (code, n) in &s.close_codes {
            row(&mut o, &[format!("unexpected close {code}"), n.to_string()]);
        }
        for (kind, n) in &s.connect_error_kinds {
            row(&mut o, &[format!("connect error: {kind}"), n.to_string()]);
        }
        for (code, n) in &s.error_codes {
            row(&mut o, &[format!("error frame: {code}"), n.to_string()]);
        }
        o.push_str("</table>");
    }
    if !r.worker_errors.is_empty() {
        let _ = write!(o, "<h2>Worker stderr</h2><pre>{}</pre>", esc(&r.worker_errors.join("\n")));
    }
    let _ = write!(
        o,
        "<h2>Setup</h2><p>nodes: {}<br>admin: {}</p><pre>{}</pre>",
        esc(&r.setup.nodes.join(" ")),
        esc(&r.setup.admins.join(" ")),
        esc(&serde_json::to_string_pretty(&r.setup.options).unwrap_or_default())
    );
    o.push_str("</body></html>\n");
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_report;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(nice_ticks(0.0, 100.0, 5), vec![0.0, 20.0, 40.0, 60.0, 80.0, 100.0]);
        assert_eq!(nice_ticks(0.0, 7.0, 5), vec![0.0, 2.0, 4.0, 6.0]);
        assert_eq!(nice_ticks(3.0, 3.0, 5), vec![3.0]);
        assert_eq!(log_ticks(1.0, 1000.0), vec![1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0]);
        assert_eq!(log_ticks(0.1, 100_000.0), vec![0.1, 1.0, 10.0, 100.0, 1000.0, 10_000.0, 100_000.0]);
        assert_eq!(short(15_300.0), "15k");
        assert_eq!(short(1_530.0), "1.5k");
        assert_eq!(short(0.25), "0.25");
        assert_eq!(short(2_500_000.0), "2.5M");
    }

    #[test]
    fn charts_are_svg_with_escaped_text_and_survive_no_data() {
        let chart = Chart {
            title: "a <b> & c",
            x_label: "s",
            y_label: "n",
            log_x: false,
            step: false,
            y_max: None,
            series: vec![Series { name: "x\"y".into(), points: vec![(0.0, 1.0), (1.0, 3.0), (2.0, f64::NAN)] }],
            markers: vec![(0.5, "hold".into())],
            format_y: short,
        };
        let svg = line_chart(&chart);
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("a &lt;b&gt; &amp; c") && svg.contains("x&quot;y"));
        assert!(!svg.contains("NaN"));
        assert!(svg.contains("hold"));
        let empty = line_chart(&Chart { series: vec![], ..chart.clone() });
        assert!(empty.contains("no data"));
        let log = line_chart(&Chart {
            log_x: true,
            step: true,
            series: vec![Series { name: "cdf".into(), points: vec![(0.0, 0.1), (0.5, 0.5), (50.0, 1.0)] }],
            ..chart
        });
        assert!(log.contains("<path d=\"M"));
        assert!(histogram_chart("h", "ms", &[]).contains("no data"));
        assert!(
            histogram_chart("h", "ms", &[(1.0, 2.0, 5), (2.0, 4.0, 0), (4.0, 8.0, 1)]).matches("class=\"bar\"").count()
                == 2
        );
    }

    #[test]
    fn long_timelines_are_thinned_for_plots() {
        let v: Vec<u32> = (0..86_400).collect();
        let d = downsample(&v, 1500);
        assert!(d.len() <= 1501 && d.len() >= 1400, "{}", d.len());
        assert_eq!((d[0], *d.last().unwrap()), (0, 86_399));
        assert_eq!(downsample(&[1, 2, 3], 1500), vec![1, 2, 3]);
        assert!(downsample::<u8>(&[], 10).is_empty());
    }

    #[test]
    fn the_page_is_self_contained_and_has_every_part() {
        let mut r = sample_report();
        r.events.push((1.0, "hold".into()));
        r.judge();
        let page = render(&r);
        assert!(page.starts_with("<!doctype html>"));
        assert!(!page.contains("<script") && !page.contains("http://cdn") && !page.contains("https://"));
        for part in [
            "Sessions open",
            "Resident memory",
            "Gateway CPU",
            "Latency CDF",
            "Latency histogram: broadcast",
            "Errors (cumulative)",
            "gw &lt;1&gt;",
            "PASS",
        ] {
            assert!(page.contains(part), "missing {part}");
        }
        assert!(page.matches("<svg").count() >= 8);
    }
}

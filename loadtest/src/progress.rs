//! Progress while a run goes: bars on a terminal (sessions open, the current phase, rates and
//! errors), or a plain line every few seconds when stderr is not a terminal (logs, CI).

use std::{
    io::IsTerminal as _,
    sync::Mutex,
    time::{Duration, Instant},
};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};

/// How to show progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ProgressMode {
    /// Bars on a terminal, lines otherwise.
    Auto,
    Bars,
    /// A line on stderr every 5 s.
    Lines,
    None,
}

/// What the display shows, refreshed by the monitor.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub open: u64,
    pub target: u64,
    pub connects_per_s: f64,
    pub received_per_s: f64,
    pub published_per_s: f64,
    pub connect_errors: u64,
    pub unexpected_closes: u64,
    pub seq_problems: u64,
    pub publish_failures: u64,
    pub gateway_rss: u64,
    pub gateway_cpu_pct: f64,
    pub gateways: usize,
}

struct Bars {
    multi: MultiProgress,
    sessions: ProgressBar,
    phase: ProgressBar,
    stats: ProgressBar,
}

struct Phase {
    name: String,
    started: Instant,
    length: Option<Duration>,
}

/// The progress display.
pub struct Ui {
    bars: Option<Bars>,
    lines: bool,
    phase: Mutex<Phase>,
    last_line: Mutex<Instant>,
}

/// `12345` → `12,345`.
pub fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as MiB with one decimal.
pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / 1048576.0)
}

impl Ui {
    pub fn new(mode: ProgressMode, target_sessions: u64) -> Self {
        let terminal = std::io::stderr().is_terminal();
        let (bars, lines) = match mode {
            ProgressMode::None => (false, false),
            ProgressMode::Lines => (false, true),
            ProgressMode::Bars => (true, false),
            ProgressMode::Auto => (terminal, !terminal),
        };
        let bars = bars.then(|| {
            let multi = MultiProgress::with_draw_target(ProgressDrawTarget::stderr_with_hz(4));
            let bar_style = |template: &str| {
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .progress_chars("█▉▊▋▌▍▎▏ ")
            };
            let sessions = multi.add(ProgressBar::new(target_sessions.max(1)));
            sessions.set_style(bar_style("{prefix:>8} [{bar:32.green/white}] {pos:>7}/{len:7} {msg}"));
            sessions.set_prefix("sessions");
            let phase = multi.add(ProgressBar::new(1));
            phase.set_style(bar_style("{prefix:>8} [{bar:32.cyan/white}] {msg}"));
            phase.set_prefix("phase");
            let stats = multi.add(ProgressBar::new_spinner());
            stats.set_style(
                ProgressStyle::with_template("{prefix:>8} {spinner} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            );
            stats.set_prefix("load");
            Bars { multi, sessions, phase, stats }
        });
        Self {
            bars,
            lines,
            phase: Mutex::new(Phase { name: "start".into(), started: Instant::now(), length: None }),
            last_line: Mutex::new(Instant::now()),
        }
    }

    /// Names the current phase (with its expected length, for the bar).
    pub fn set_phase(&self, name: &str, length: Option<Duration>) {
        let mut p = self.phase.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        *p = Phase { name: name.to_owned(), started: Instant::now(), length };
        drop(p);
        self.println(&format!("— {name}"));
    }

    /// Prints a line (above the bars on a terminal).
    pub fn println(&self, line: &str) {
        match &self.bars {
            Some(b) => b.multi.suspend(|| eprintln!("{line}")),
            None if self.lines => eprintln!("{line}"),
            None => {}
        }
    }

    pub fn update(&self, s: &Snapshot) {
        let (phase_name, elapsed, length) = {
            let p = self.phase.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            (p.name.clone(), p.started.elapsed(), p.length)
        };
        let errors = format!(
            "errors: connect {} · closes {} · seq {} · publish {}",
            s.connect_errors, s.unexpected_closes, s.seq_problems, s.publish_failures
        );
        let gateways = if s.gateways > 0 {
            format!(" · gateways ({}) {} CPU {:.0} %", s.gateways, mib(s.gateway_rss), s.gateway_cpu_pct)
        } else {
            String::new()
        };
        let rates = format!("recv {:.0}/s · pub {:.0}/s", s.received_per_s, s.published_per_s);
        if let Some(b) = &self.bars {
            b.sessions.set_length(s.target.max(1));
            b.sessions.set_position(s.open);
            b.sessions.set_message(format!("{:.0} connects/s", s.connects_per_s));
            match length {
                Some(len) => {
                    b.phase.set_length(len.as_millis().max(1) as u64);
                    b.phase.set_position((elapsed.as_millis() as u64).min(len.as_millis() as u64));
                    b.phase.set_message(format!(
                        "{phase_name} {:.0} s / {:.0} s",
                        elapsed.as_secs_f64(),
                        len.as_secs_f64()
                    ));
                }
                None => {
                    b.phase.set_length(1);
                    b.phase.set_position(0);
                    b.phase.set_message(format!("{phase_name} {:.0} s", elapsed.as_secs_f64()));
                }
            }
            b.stats.set_message(format!("{rates}{gateways} · {errors}"));
            b.stats.tick();
        } else if self.lines {
            let mut last = self.last_line.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if last.elapsed() >= Duration::from_secs(5) {
                *last = Instant::now();
                eprintln!(
                    "[{phase_name} {:.0} s] open {}/{} · {:.0} connects/s · {rates}{gateways} · {errors}",
                    elapsed.as_secs_f64(),
                    thousands(s.open),
                    thousands(s.target),
                    s.connects_per_s
                );
            }
        }
    }

    /// Removes the bars.
    pub fn finish(&self) {
        if let Some(b) = &self.bars {
            for bar in [&b.sessions, &b.phase, &b.stats] {
                bar.finish_and_clear();
            }
            let _ = b.multi.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1000), "1,000");
        assert_eq!(thousands(1234567), "1,234,567");
        assert_eq!(mib(3 * 1048576 / 2), "1.5 MiB");
    }

    #[test]
    fn a_silent_display_takes_updates() {
        let ui = Ui::new(ProgressMode::None, 10);
        ui.set_phase("x", Some(Duration::from_secs(1)));
        ui.update(&Snapshot::default());
        ui.println("nothing");
        ui.finish();
    }
}

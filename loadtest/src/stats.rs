//! Latency math and process figures: percentiles over samples, a log-linear histogram that
//! workers fill and the orchestrator merges (percentiles, CDF and plot bins from it), and
//! figures read from `/proc` about a process (resident memory, CPU time).

use serde::{Deserialize, Serialize};

/// Percentiles of microsecond samples, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub count: usize,
    pub mean_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
}

/// The sample at quantile `q` of sorted samples: the smallest sample with at least `q` of all
/// samples at or below it (nearest rank).
fn nearest_rank(sorted: &[u64], q: f64) -> u64 {
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Percentiles of microsecond samples (sorted in place).
pub fn summarize(samples: &mut [u64]) -> Summary {
    if samples.is_empty() {
        return Summary::default();
    }
    samples.sort_unstable();
    let at = |q: f64| nearest_rank(samples, q) as f64 / 1000.0;
    let mean = samples.iter().map(|&s| s as f64).sum::<f64>() / samples.len() as f64 / 1000.0;
    Summary {
        count: samples.len(),
        mean_ms: mean,
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
        max_ms: at(1.0),
    }
}

/// The median of some numbers.
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Sub-buckets per power of two: values below `2^SUB_BITS` are exact, larger ones fall in
/// buckets 1/64 of their octave wide (a relative error under 1.6 %).
const SUB_BITS: u32 = 6;
const SUB: u64 = 1 << SUB_BITS;

/// The bucket of a value.
pub fn bucket_of(value: u64) -> usize {
    if value < SUB {
        return value as usize;
    }
    let msb = 63 - value.leading_zeros();
    let shift = msb - SUB_BITS;
    let sub = (value >> shift) - SUB;
    ((u64::from(shift) + 1) * SUB + sub) as usize
}

/// The smallest and largest value of a bucket.
pub fn bucket_bounds(index: usize) -> (u64, u64) {
    let index = index as u64;
    if index < SUB {
        return (index, index);
    }
    let shift = index / SUB - 1;
    let low = (SUB + index % SUB) << shift;
    (low, low + ((1u64 << shift) - 1))
}

/// A log-linear histogram of microsecond values. Dense, grown on demand (a minute's worth of
/// microseconds needs ~1,300 buckets); serialised sparse.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    min: u64,
    max: u64,
    sum: u128,
}

/// The wire and report form of a [`Histogram`]: only the buckets with counts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SparseHistogram {
    /// `[bucket, count]` pairs, buckets ascending.
    pub buckets: Vec<(u32, u64)>,
    pub min: u64,
    pub max: u64,
    /// Sum of the values (µs; u64 because u128 does not survive serde's tagged enums).
    pub sum: u64,
}

impl Histogram {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn record(&mut self, value: u64) {
        self.record_n(value, 1);
    }

    pub fn record_n(&mut self, value: u64, n: u64) {
        if n == 0 {
            return;
        }
        let b = bucket_of(value);
        if b >= self.counts.len() {
            self.counts.resize(b + 1, 0);
        }
        self.counts[b] += n;
        if self.total == 0 || value < self.min {
            self.min = value;
        }
        self.max = self.max.max(value);
        self.total += n;
        self.sum += u128::from(value) * u128::from(n);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn min(&self) -> u64 {
        self.min
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn mean(&self) -> f64 {
        if self.total == 0 { 0.0 } else { self.sum as f64 / self.total as f64 }
    }

    pub fn merge(&mut self, other: &Histogram) {
        if other.total == 0 {
            return;
        }
        if other.counts.len() > self.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.min = if self.total == 0 { other.min } else { self.min.min(other.min) };
        self.max = self.max.max(other.max);
        self.total += other.total;
        self.sum += other.sum;
    }

    /// The value at quantile `q` (0–1), nearest rank: exact below 64 µs and for the extremes,
    /// else the middle of its bucket (within 0.8 %).
    pub fn quantile(&self, q: f64) -> u64 {
        if self.total == 0 {
            return 0;
        }
        if q >= 1.0 {
            return self.max;
        }
        let rank = ((self.total as f64 * q).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, high) = bucket_bounds(index);
                return (low + (high - low) / 2).clamp(self.min, self.max);
            }
        }
        self.max
    }

    /// Percentiles in milliseconds.
    pub fn summary(&self) -> Summary {
        let ms = |us: u64| us as f64 / 1000.0;
        Summary {
            count: self.total as usize,
            mean_ms: self.mean() / 1000.0,
            p50_ms: ms(self.quantile(0.50)),
            p90_ms: ms(self.quantile(0.90)),
            p99_ms: ms(self.quantile(0.99)),
            p999_ms: ms(self.quantile(0.999)),
            max_ms: ms(self.max),
        }
    }

    /// The cumulative distribution: `(value µs, fraction of samples ≤ value)` at the top of every
    /// non-empty bucket; the last point is `(max, 1.0)`.
    pub fn cdf(&self) -> Vec<(u64, f64)> {
        let mut points = Vec::new();
        let mut seen = 0;
        for (index, &count) in self.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            seen += count;
            let value = bucket_bounds(index).1.min(self.max);
            points.push((value, seen as f64 / self.total as f64));
        }
        points
    }

    /// Re-binned for a plot: at most `bins` log-spaced bins between the smallest and largest
    /// value, each `(from µs, to µs, count)`. Every sample is in exactly one bin.
    pub fn plot_bins(&self, bins: usize) -> Vec<(f64, f64, u64)> {
        if self.total == 0 || bins == 0 {
            return Vec::new();
        }
        let low = (self.min.max(1)) as f64;
        let high = (self.max.max(1) as f64 * 1.000_001).max(low * 1.01);
        let ratio = (high / low).powf(1.0 / bins as f64);
        let edges: Vec<f64> = (0..=bins).map(|i| low * ratio.powi(i as i32)).collect();
        let mut out: Vec<(f64, f64, u64)> = edges.windows(2).map(|w| (w[0], w[1], 0)).collect();
        for (index, &count) in self.counts.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let (a, b) = bucket_bounds(index);
            let middle = ((a + (b - a) / 2).clamp(self.min, self.max)).max(1) as f64;
            let bin = out.iter().position(|&(_, to, _)| middle < to).unwrap_or(out.len() - 1);
            out[bin].2 += count;
        }
        out
    }

    pub fn to_sparse(&self) -> SparseHistogram {
        SparseHistogram {
            buckets: self.counts.iter().enumerate().filter(|(_, c)| **c > 0).map(|(i, &c)| (i as u32, c)).collect(),
            min: self.min,
            max: self.max,
            sum: u64::try_from(self.sum).unwrap_or(u64::MAX),
        }
    }

    pub fn from_sparse(sparse: &SparseHistogram) -> Self {
        let mut h = Histogram::new();
        if let Some(&(last, _)) = sparse.buckets.last() {
            h.counts.resize(last as usize + 1, 0);
        }
        for &(bucket, count) in &sparse.buckets {
            if let Some(slot) = h.counts.get_mut(bucket as usize) {
                *slot += count;
                h.total += count;
            }
        }
        if h.total > 0 {
            h.min = sparse.min;
            h.max = sparse.max;
            h.sum = u128::from(sparse.sum);
        }
        h
    }
}

/// Resident set size of `pid`, in bytes (`VmRSS` of `/proc/PID/status`).
pub fn rss_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// User plus system CPU time of `pid`, in seconds (`/proc/PID/stat`, clock ticks of 1/100 s).
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    cpu_seconds_of(&format!("/proc/{pid}/stat"))
}

/// User plus system CPU time in a `/proc/.../stat` file (a process's or a thread's), in seconds.
pub fn cpu_seconds_of(stat_path: &str) -> Option<f64> {
    let stat = std::fs::read_to_string(stat_path).ok()?;
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    Some((utime + stime) / 100.0)
}

/// Whether a process is alive (and not a zombie).
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !matches!(stat.rsplit_once(')').and_then(|(_, r)| r.split_whitespace().next()), Some("Z" | "X")),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_pick_the_right_samples() {
        let mut v: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
        let s = summarize(&mut v);
        assert_eq!((s.count, s.p50_ms, s.p90_ms, s.p99_ms, s.max_ms), (100, 50.0, 90.0, 99.0, 100.0));
        assert_eq!(s.mean_ms, 50.5);
        assert_eq!(median(&mut [3.0, 1.0, 2.0]), 2.0);
        assert_eq!(summarize(&mut []), Summary::default());
    }

    #[test]
    fn buckets_cover_every_value_once_and_in_order() {
        let mut previous = (0, 0);
        for index in 0..bucket_of(u64::MAX) + 1 {
            let (low, high) = bucket_bounds(index);
            assert!(low <= high);
            if index > 0 {
                assert_eq!(low, previous.1 + 1, "bucket {index} follows the previous one");
            }
            assert_eq!(bucket_of(low), index);
            assert_eq!(bucket_of(high), index);
            previous = (low, high);
        }
        assert_eq!(previous.1, u64::MAX);
        for v in [0, 1, 63, 64, 127, 128, 129, 1000, 123_456, 60_000_000] {
            let (low, high) = bucket_bounds(bucket_of(v));
            assert!(low <= v && v <= high, "{v} in [{low}, {high}]");
            assert!((high - low) as f64 <= v as f64 / 64.0 + 1.0, "bucket of {v} is narrow");
        }
    }

    #[test]
    fn histogram_quantiles_are_within_a_bucket_of_the_exact_ones() {
        let mut exact: Vec<u64> = (0..100_000u64).map(|i| (i * 7919) % 250_000 + 1).collect();
        let mut h = Histogram::new();
        for &v in &exact {
            h.record(v);
        }
        exact.sort_unstable();
        for q in [0.01, 0.5, 0.9, 0.99, 0.999] {
            let want = nearest_rank(&exact, q) as f64;
            let got = h.quantile(q) as f64;
            assert!((got - want).abs() / want < 0.01, "q{q}: {got} vs {want}");
        }
        assert_eq!(h.quantile(1.0), *exact.last().unwrap());
        assert_eq!(h.count(), 100_000);
        assert_eq!(h.min(), exact[0]);
        let s = h.summary();
        assert_eq!(s.count, 100_000);
        assert!((s.mean_ms * 1000.0 - exact.iter().sum::<u64>() as f64 / 1e5).abs() < 1e-6);
    }

    #[test]
    fn small_values_are_exact() {
        let mut h = Histogram::new();
        for v in [5, 5, 7, 9] {
            h.record(v);
        }
        assert_eq!((h.quantile(0.5), h.quantile(0.75), h.quantile(1.0)), (5, 7, 9));
        assert_eq!(Histogram::new().quantile(0.5), 0);
    }

    #[test]
    fn merging_equals_recording_everything_in_one() {
        let (mut a, mut b, mut all) = (Histogram::new(), Histogram::new(), Histogram::new());
        for v in 0..5000u64 {
            let x = v * v % 100_003;
            if v % 3 == 0 {
                a.record(x)
            } else {
                b.record(x)
            }
            all.record(x);
        }
        let mut merged = Histogram::new();
        merged.merge(&a);
        merged.merge(&b);
        merged.merge(&Histogram::new());
        assert_eq!(merged, all);
    }

    #[test]
    fn sparse_form_round_trips_through_json() {
        let mut h = Histogram::new();
        for v in [3, 100, 100, 5_000, 2_000_000] {
            h.record(v);
        }
        let json = serde_json::to_string(&h.to_sparse()).unwrap();
        let back = Histogram::from_sparse(&serde_json::from_str(&json).unwrap());
        assert_eq!(back, h);
        assert_eq!(Histogram::from_sparse(&SparseHistogram::default()), Histogram::new());
    }

    #[test]
    fn cdf_rises_to_one_and_plot_bins_hold_every_sample() {
        let mut h = Histogram::new();
        for v in 1..=10_000u64 {
            h.record(v * 10);
        }
        let cdf = h.cdf();
        assert!(cdf.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        assert_eq!(cdf.last().unwrap(), &(100_000, 1.0));
        let bins = h.plot_bins(40);
        assert_eq!(bins.len(), 40);
        assert_eq!(bins.iter().map(|b| b.2).sum::<u64>(), 10_000);
        assert!(bins.windows(2).all(|w| (w[0].1 - w[1].0).abs() < 1e-6));
        let mut one = Histogram::new();
        one.record(0);
        assert_eq!(one.plot_bins(10).iter().map(|b| b.2).sum::<u64>(), 1);
    }

    #[test]
    fn this_process_has_rss_and_cpu() {
        let pid = std::process::id();
        assert!(rss_bytes(pid).unwrap() > 1024 * 1024);
        assert!(cpu_seconds(pid).is_some());
        assert!(alive(pid));
        assert!(!alive(u32::MAX));
    }
}

//! [`Registry`]: the process's metrics, recorded through the `metrics` facade and read back
//! as Prometheus text (`serve`'s `GET /metrics`) or as CloudWatch EMF lines (Lambda).
//!
//! A counter or gauge is one atomic; a histogram is fixed buckets of atomics (bounds chosen
//! by [`super::names::buckets_for`]) and, when EMF is on, the raw values since the last flush.
//! Lookups take a read lock on a map keyed by [`Key`] (whose hash is computed once, when
//! the key is built).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use ::metrics::{
    Counter, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder, SharedString, Unit,
};

/// One histogram: cumulative buckets are derived at render time from per-bucket counts.
pub(crate) struct Hist {
    pub bounds: &'static [f64],
    /// One count per bound, plus one for values above the last bound.
    pub counts: Box<[AtomicU64]>,
    pub count: AtomicU64,
    /// The sum of the values, as `f64` bits.
    pub sum: AtomicU64,
    /// Values recorded since the last EMF flush (only when EMF is on).
    pub pending: Option<Mutex<Vec<f64>>>,
}

impl Hist {
    fn new(bounds: &'static [f64], keep_values: bool) -> Hist {
        Hist {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum: AtomicU64::new(0f64.to_bits()),
            pending: keep_values.then(|| Mutex::new(Vec::new())),
        }
    }

    pub fn sum(&self) -> f64 {
        f64::from_bits(self.sum.load(Ordering::Relaxed))
    }

    pub fn take_pending(&self) -> Vec<f64> {
        self.pending
            .as_ref()
            .map(|p| std::mem::take(&mut *p.lock().unwrap_or_else(PoisonError::into_inner)))
            .unwrap_or_default()
    }
}

impl HistogramFn for Hist {
    fn record(&self, value: f64) {
        if !value.is_finite() {
            return;
        }
        let slot = self
            .bounds
            .iter()
            .position(|bound| value <= *bound)
            .unwrap_or(self.bounds.len());
        if let Some(count) = self.counts.get(slot) {
            count.fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let _ = self
            .sum
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                Some((f64::from_bits(bits) + value).to_bits())
            });
        if let Some(pending) = &self.pending {
            pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(value);
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

#[derive(Clone)]
pub(crate) struct Description {
    pub unit: Option<Unit>,
    pub text: SharedString,
}

/// Every metric of the process.
#[derive(Default)]
pub struct Registry {
    pub(crate) counters: RwLock<HashMap<Key, Arc<AtomicU64>>>,
    pub(crate) gauges: RwLock<HashMap<Key, Arc<AtomicU64>>>,
    pub(crate) histograms: RwLock<HashMap<Key, Arc<Hist>>>,
    pub(crate) descriptions: RwLock<HashMap<String, Description>>,
    /// Histograms keep their raw values for the next EMF flush.
    pub(crate) keep_values: bool,
    /// Counter values at the last EMF flush (EMF carries deltas).
    pub(crate) flushed: Mutex<HashMap<Key, u64>>,
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(PoisonError::into_inner)
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(PoisonError::into_inner)
}

fn get_or_insert<V>(
    map: &RwLock<HashMap<Key, Arc<V>>>,
    key: &Key,
    make: impl FnOnce() -> V,
) -> Arc<V> {
    if let Some(found) = read(map).get(key) {
        return found.clone();
    }
    write(map)
        .entry(key.clone())
        .or_insert_with(|| Arc::new(make()))
        .clone()
}

impl Registry {
    pub fn new(keep_values: bool) -> Registry {
        Registry {
            keep_values,
            ..Registry::default()
        }
    }

    fn describe(&self, key: KeyName, unit: Option<Unit>, text: SharedString) {
        write(&self.descriptions).insert(key.as_str().to_string(), Description { unit, text });
    }

    pub(crate) fn description(&self, name: &str) -> Option<Description> {
        read(&self.descriptions).get(name).cloned()
    }

    pub(crate) fn counters(&self) -> Vec<(Key, u64)> {
        read(&self.counters)
            .iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }

    pub(crate) fn gauges(&self) -> Vec<(Key, f64)> {
        read(&self.gauges)
            .iter()
            .map(|(k, v)| (k.clone(), f64::from_bits(v.load(Ordering::Relaxed))))
            .collect()
    }

    pub(crate) fn histograms(&self) -> Vec<(Key, Arc<Hist>)> {
        read(&self.histograms)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// The Prometheus text exposition format (version 0.0.4) of every metric, plus `extra`
    /// lines (already formatted: the process and pool metrics read at scrape time).
    pub fn render_prometheus(&self, extra: &str) -> String {
        let mut families: std::collections::BTreeMap<String, Vec<String>> = Default::default();
        let mut kinds: HashMap<String, Kind> = HashMap::new();
        for (key, value) in self.counters() {
            let name = key.name().to_string();
            let shown = super::names::format_counter(&name, value);
            families
                .entry(name.clone())
                .or_default()
                .push(format!("{name}{} {shown}", labels(&key, None)));
            kinds.insert(name, Kind::Counter);
        }
        for (key, value) in self.gauges() {
            let name = key.name().to_string();
            families.entry(name.clone()).or_default().push(format!(
                "{name}{} {}",
                labels(&key, None),
                number(value)
            ));
            kinds.insert(name, Kind::Gauge);
        }
        for (key, hist) in self.histograms() {
            let name = key.name().to_string();
            let lines = families.entry(name.clone()).or_default();
            let mut cumulative = 0u64;
            for (i, bound) in hist.bounds.iter().enumerate() {
                cumulative += hist.counts.get(i).map_or(0, |c| c.load(Ordering::Relaxed));
                lines.push(format!(
                    "{name}_bucket{} {cumulative}",
                    labels(&key, Some(&number(*bound)))
                ));
            }
            let count = hist.count.load(Ordering::Relaxed);
            lines.push(format!(
                "{name}_bucket{} {count}",
                labels(&key, Some("+Inf"))
            ));
            lines.push(format!(
                "{name}_sum{} {}",
                labels(&key, None),
                number(hist.sum())
            ));
            lines.push(format!("{name}_count{} {count}", labels(&key, None)));
            kinds.insert(name, Kind::Histogram);
        }
        let mut out = String::with_capacity(8 * 1024);
        for (name, mut lines) in families {
            let kind = kinds.get(&name).copied().unwrap_or(Kind::Gauge);
            if let Some(description) = self.description(&name) {
                let _ = writeln!(out, "# HELP {name} {}", escape_help(&description.text));
            }
            let _ = writeln!(out, "# TYPE {name} {}", kind.as_str());
            if kind != Kind::Histogram {
                lines.sort();
            }
            for line in lines {
                out.push_str(&line);
                out.push('\n');
            }
        }
        out.push_str(extra);
        out
    }
}

/// `{a="x",b="y"}` with `le` last for histogram buckets; empty when there are none.
fn labels(key: &Key, le: Option<&str>) -> String {
    let mut parts: Vec<String> = key
        .labels()
        .map(|label| format!("{}=\"{}\"", label.key(), escape_label(label.value())))
        .collect();
    if let Some(le) = le {
        parts.push(format!("le=\"{le}\""));
    }
    if parts.is_empty() {
        String::new()
    } else {
        format!("{{{}}}", parts.join(","))
    }
}

pub(crate) fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(value: &str) -> String {
    value.replace('\\', "\\\\").replace('\n', "\\n")
}

/// A float as Prometheus writes it (integers without a fraction).
pub(crate) fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".into()
    } else if value.is_infinite() {
        if value > 0.0 {
            "+Inf".into()
        } else {
            "-Inf".into()
        }
    } else {
        format!("{value}")
    }
}

impl Recorder for Registry {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.describe(key, unit, description);
    }

    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(get_or_insert(&self.counters, key, || AtomicU64::new(0)))
    }

    fn register_gauge(&self, key: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::from_arc(get_or_insert(&self.gauges, key, || {
            AtomicU64::new(0f64.to_bits())
        }))
    }

    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        let keep = self.keep_values;
        Histogram::from_arc(get_or_insert(&self.histograms, key, || {
            Hist::new(super::names::buckets_for(key.name()), keep)
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_gauges_and_cumulative_buckets() {
        let registry = Registry::new(false);
        ::metrics::with_local_recorder(&registry, || {
            ::metrics::describe_counter!("t_requests_total", "Requests.");
            ::metrics::counter!("t_requests_total", "route" => "/v1/x", "status_class" => "2xx")
                .increment(3);
            ::metrics::gauge!("t_open").set(2.5);
            let h =
                ::metrics::histogram!("switchboard_request_duration_seconds", "route" => "a\"b");
            h.record(0.0004);
            h.record(0.002);
            h.record(1_000.0);
        });
        let text = registry.render_prometheus("");
        assert!(
            text.contains("# HELP t_requests_total Requests.\n# TYPE t_requests_total counter\n")
        );
        assert!(text.contains("t_requests_total{route=\"/v1/x\",status_class=\"2xx\"} 3\n"));
        assert!(text.contains("# TYPE t_open gauge\nt_open 2.5\n"));
        assert!(text.contains(
            "switchboard_request_duration_seconds_bucket{route=\"a\\\"b\",le=\"0.0005\"} 1\n"
        ));
        assert!(text.contains(
            "switchboard_request_duration_seconds_bucket{route=\"a\\\"b\",le=\"0.0025\"} 2\n"
        ));
        assert!(text.contains(
            "switchboard_request_duration_seconds_bucket{route=\"a\\\"b\",le=\"+Inf\"} 3\n"
        ));
        assert!(text.contains("switchboard_request_duration_seconds_count{route=\"a\\\"b\"} 3\n"));
    }
}

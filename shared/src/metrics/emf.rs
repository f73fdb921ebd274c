//! CloudWatch Embedded Metric Format: what a Lambda function recorded since its last flush,
//! as JSON lines on stdout that CloudWatch Logs turns into metrics with no agent and no API
//! call. Dimensions are limited to [`EMF_DIMENSIONS`] (other labels are summed over), with
//! roll-ups (no dimension; status class, provider or model alone) declared on each line;
//! counters carry their increase since the last flush, histograms their raw values
//! (at most 100 per line), gauges their value.

use std::collections::BTreeMap;

use ::metrics::Key;
use serde_json::{Map, Value, json};

use super::registry::Registry;

pub(crate) const EMF_NAMESPACE: &str = "Switchboard";
/// The only labels that become CloudWatch dimensions (each combination is a metric, and
/// CloudWatch bills per metric).
pub(crate) const EMF_DIMENSIONS: [&str; 4] = ["route", "model", "provider", "status_class"];
/// EMF's limit of values per metric per line.
const MAX_VALUES: usize = 100;

type Dimensions = Vec<(String, String)>;

#[derive(Default)]
struct Group {
    /// Metric name → (unit, values).
    metrics: BTreeMap<String, (&'static str, Vec<f64>)>,
}

fn dimensions(key: &Key) -> Dimensions {
    let mut dims: Dimensions = key
        .labels()
        .filter(|l| EMF_DIMENSIONS.contains(&l.key()))
        .map(|l| (l.key().to_string(), l.value().to_string()))
        .collect();
    dims.sort();
    dims
}

fn unit(registry: &Registry, name: &str) -> &'static str {
    match registry.description(name).and_then(|d| d.unit) {
        Some(::metrics::Unit::Seconds) => "Seconds",
        Some(::metrics::Unit::Bytes) => "Bytes",
        Some(::metrics::Unit::Count) => "Count",
        _ => "None",
    }
}

/// The EMF lines for everything recorded since the last call (and remembers the counters'
/// values for the next one).
pub(crate) fn render_emf(registry: &Registry, timestamp_ms: u64) -> Vec<String> {
    let mut groups: BTreeMap<Dimensions, Group> = BTreeMap::new();
    let mut add = |key: &Key, unit: &'static str, values: Vec<f64>, sum: bool| {
        let group = groups.entry(dimensions(key)).or_default();
        let entry = group
            .metrics
            .entry(key.name().to_string())
            .or_insert((unit, Vec::new()));
        match (sum, entry.1.first_mut()) {
            (true, Some(total)) => *total += values.iter().sum::<f64>(),
            _ => entry.1.extend(values),
        }
    };

    {
        let mut flushed = registry
            .flushed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for (key, value) in registry.counters() {
            let before = flushed.insert(key.clone(), value).unwrap_or(0);
            let delta = value.saturating_sub(before);
            if delta == 0 {
                continue;
            }
            let shown: f64 = super::names::format_counter(key.name(), delta)
                .parse()
                .unwrap_or(delta as f64);
            add(&key, unit(registry, key.name()), vec![shown], true);
        }
    }
    for (key, value) in registry.gauges() {
        add(&key, unit(registry, key.name()), vec![value], true);
    }
    for (key, hist) in registry.histograms() {
        let values = hist.take_pending();
        if !values.is_empty() {
            add(&key, unit(registry, key.name()), values, false);
        }
    }

    let mut lines = Vec::new();
    for (dims, group) in groups {
        // Lines until every value is out: the first carries every metric, later ones the
        // histograms' values beyond 100.
        let mut rest: Vec<(String, &'static str, Vec<f64>)> = group
            .metrics
            .into_iter()
            .map(|(name, (unit, values))| (name, unit, values))
            .collect();
        while !rest.is_empty() {
            let mut body = Map::new();
            let mut definitions = Vec::new();
            let mut next = Vec::new();
            for (name, unit, mut values) in rest {
                let tail = values.split_off(values.len().min(MAX_VALUES));
                let value = if values.len() == 1 {
                    json!(values[0])
                } else {
                    json!(values)
                };
                definitions.push(json!({"Name": name, "Unit": unit}));
                body.insert(name.clone(), value);
                if !tail.is_empty() {
                    next.push((name, unit, tail));
                }
            }
            for (k, v) in &dims {
                body.insert(k.clone(), Value::String(v.clone()));
            }
            let names: Vec<&str> = dims.iter().map(|(k, _)| k.as_str()).collect();
            // The full set, then roll-ups CloudWatch aggregates itself: the whole service,
            // and each of status class, provider and model alone (alarms and dashboards
            // read these without search expressions).
            let mut sets: Vec<Vec<&str>> = vec![names.clone()];
            if !names.is_empty() {
                sets.push(Vec::new());
                for single in ["status_class", "provider", "model"] {
                    if names.len() > 1 && names.contains(&single) {
                        sets.push(vec![single]);
                    }
                }
            }
            body.insert(
                "_aws".into(),
                json!({
                    "Timestamp": timestamp_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": EMF_NAMESPACE,
                        "Dimensions": sets,
                        "Metrics": definitions,
                    }],
                }),
            );
            lines.push(Value::Object(body).to_string());
            rest = next;
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_carry_deltas_values_and_only_the_allowed_dimensions() {
        let registry = Registry::new(true);
        ::metrics::with_local_recorder(&registry, || {
            super::super::describe();
            ::metrics::counter!(super::super::REQUESTS, "route" => "/v1/chat/completions",
                "status_class" => "2xx", "model" => "gpt-4o", "provider" => "openai",
                "byok" => "false")
            .increment(2);
            ::metrics::counter!(super::super::REQUESTS, "route" => "/v1/chat/completions",
                "status_class" => "2xx", "model" => "gpt-4o", "provider" => "openai",
                "byok" => "true")
            .increment(1);
            let h = ::metrics::histogram!(super::super::REQUEST_DURATION,
                "route" => "/v1/chat/completions", "status_class" => "2xx",
                "model" => "gpt-4o", "provider" => "openai");
            for i in 0..150 {
                h.record(f64::from(i) / 1000.0);
            }
        });
        let lines = render_emf(&registry, 1_700_000_000_000);
        assert_eq!(lines.len(), 2, "{lines:?}");
        let first: Value = serde_json::from_str(&lines[0]).unwrap_or_default();
        assert_eq!(first["switchboard_requests_total"], json!(3.0));
        assert_eq!(first["model"], "gpt-4o");
        assert!(first.get("byok").is_none());
        assert_eq!(
            first["switchboard_request_duration_seconds"]
                .as_array()
                .map(Vec::len),
            Some(100)
        );
        let directive = &first["_aws"]["CloudWatchMetrics"][0];
        assert_eq!(directive["Namespace"], "Switchboard");
        assert_eq!(
            directive["Dimensions"],
            json!([
                ["model", "provider", "route", "status_class"],
                [],
                ["status_class"],
                ["provider"],
                ["model"]
            ])
        );
        let second: Value = serde_json::from_str(&lines[1]).unwrap_or_default();
        assert_eq!(
            second["switchboard_request_duration_seconds"]
                .as_array()
                .map(Vec::len),
            Some(50)
        );
        // Nothing new: nothing written.
        assert!(render_emf(&registry, 1_700_000_000_001).is_empty());
    }
}

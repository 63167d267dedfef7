//! Figures: percentiles, and the flat `key → number` map that is both printed and written to
//! `results.json`.

use std::collections::BTreeMap;
use std::time::Duration;

/// Nearest-rank percentile (`p` in 0..=100) of `samples`; NaN when empty.
pub fn percentile(samples: &[f64], p: f64) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

pub fn median(samples: &[f64]) -> f64 {
    if samples.is_empty() {
        return f64::NAN;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    let n = sorted.len();
    if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Rounds for display and storage: 3 significant decimals are plenty.
pub fn round(v: f64, decimals: i32) -> f64 {
    let f = 10f64.powi(decimals);
    (v * f).round() / f
}

#[derive(Default)]
pub struct Results {
    values: BTreeMap<String, f64>,
    /// Free-text lines for the log (breakdowns by operation); not part of results.json.
    pub notes: Vec<String>,
}

impl Results {
    pub fn set(&mut self, key: impl Into<String>, value: f64) {
        self.values.insert(key.into(), round(value, 3));
    }

    pub fn get(&self, key: &str) -> f64 {
        self.values.get(key).copied().unwrap_or(f64::NAN)
    }

    pub fn has(&self, key: &str) -> bool {
        self.values.contains_key(key)
    }

    pub fn note(&mut self, line: impl Into<String>) {
        let line = line.into();
        eprintln!("  {line}");
        self.notes.push(line);
    }

    /// Takes the keys of an earlier results.json that this run does not measure (`scale.*` and
    /// the rest are written by different runs into the same file).
    pub fn keep_others(&mut self, earlier: &str, ours: impl Fn(&str) -> bool) {
        let Ok(serde_json::Value::Object(map)) = serde_json::from_str(earlier) else {
            return;
        };
        for (key, value) in map {
            if let (false, Some(v)) = (ours(&key), value.as_f64()) {
                self.values.entry(key).or_insert(v);
            }
        }
    }

    /// `{"key": number, …}`; non-finite values (a phase that could not measure) are left out.
    pub fn to_json(&self) -> String {
        let map: serde_json::Map<String, serde_json::Value> = self
            .values
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|(k, v)| (k.clone(), serde_json::json!(v)))
            .collect();
        serde_json::to_string_pretty(&serde_json::Value::Object(map)).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 50.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[3.0], 99.0), 3.0);
        assert_eq!(median(&[1.0, 3.0, 2.0, 10.0]), 2.5);
    }
}

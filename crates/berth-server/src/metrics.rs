//! `/metrics` in Prometheus's text format: sandboxes by state, API requests by route and
//! status, and a histogram of exec durations (request to the process's end).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Upper bounds (seconds) of the exec histogram's buckets.
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(String, String, u16), u64>,
    exec_buckets: [u64; BUCKETS.len()],
    exec_count: u64,
    exec_sum: f64,
}

/// The server's counters.
#[derive(Default)]
pub struct Metrics {
    inner: Mutex<Inner>,
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Counts one answered request.
    pub fn request(&self, method: &str, route: &str, status: u16) {
        *self
            .lock()
            .requests
            .entry((method.to_string(), route.to_string(), status))
            .or_default() += 1;
    }

    /// Records one exec's duration.
    pub fn observe_exec(&self, took: Duration) {
        let secs = took.as_secs_f64();
        let mut inner = self.lock();
        for (i, bound) in BUCKETS.iter().enumerate() {
            if secs <= *bound {
                inner.exec_buckets[i] += 1;
            }
        }
        inner.exec_count += 1;
        inner.exec_sum += secs;
    }

    /// The text exposition, with the sandboxes counted by state.
    pub fn render(&self, by_state: &BTreeMap<String, u64>) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP berth_sandboxes Sandboxes of this server by state."
        );
        let _ = writeln!(out, "# TYPE berth_sandboxes gauge");
        for state in ["running", "paused", "stopped"] {
            let n = by_state.get(state).copied().unwrap_or(0);
            let _ = writeln!(out, "berth_sandboxes{{state=\"{state}\"}} {n}");
        }
        let _ = writeln!(
            out,
            "# HELP berth_api_requests_total API requests by route and status."
        );
        let _ = writeln!(out, "# TYPE berth_api_requests_total counter");
        for ((method, route, status), n) in &inner.requests {
            let _ = writeln!(
                out,
                "berth_api_requests_total{{method=\"{method}\",route=\"{route}\",status=\"{status}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP berth_exec_duration_seconds Exec requests, start to the process's end."
        );
        let _ = writeln!(out, "# TYPE berth_exec_duration_seconds histogram");
        for (i, bound) in BUCKETS.iter().enumerate() {
            let _ = writeln!(
                out,
                "berth_exec_duration_seconds_bucket{{le=\"{bound}\"}} {}",
                inner.exec_buckets[i]
            );
        }
        let _ = writeln!(
            out,
            "berth_exec_duration_seconds_bucket{{le=\"+Inf\"}} {}",
            inner.exec_count
        );
        let _ = writeln!(out, "berth_exec_duration_seconds_sum {}", inner.exec_sum);
        let _ = writeln!(
            out,
            "berth_exec_duration_seconds_count {}",
            inner.exec_count
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_is_cumulative() {
        let m = Metrics::default();
        m.observe_exec(Duration::from_millis(3));
        m.observe_exec(Duration::from_millis(300));
        m.request("GET", "/v1/sandboxes", 200);
        let text = m.render(&BTreeMap::from([("running".to_string(), 2)]));
        assert!(text.contains("berth_exec_duration_seconds_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("berth_exec_duration_seconds_bucket{le=\"0.5\"} 2"));
        assert!(text.contains("berth_exec_duration_seconds_count 2"));
        assert!(text.contains("berth_sandboxes{state=\"running\"} 2"));
        assert!(text.contains(
            "berth_api_requests_total{method=\"GET\",route=\"/v1/sandboxes\",status=\"200\"} 1"
        ));
    }
}

//! Per-request measurements: time to first token, prefill and decode speed, per-token latency
//! percentiles and the process's peak resident memory.
//!
//! Peak memory is the kernel's high-water mark of resident memory, `VmHWM` in `/proc/self/status`:
//! it covers the whole process (weights paged in from the mapping, KV caches, buffers) since it
//! started, not just one request, and it is unavailable (`None`) outside Linux.

use std::fmt;
use std::time::Duration;

/// Counts and timings of one generation.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct GenerationMetrics {
    /// Positions already in the session and reused (not evaluated again).
    pub reused_tokens: usize,
    /// Prompt tokens evaluated by the prefill.
    pub prompt_tokens: usize,
    /// Tokens generated (end-of-generation token excluded).
    pub generated_tokens: usize,
    /// Prefill wall time.
    pub prefill: Duration,
    /// From the call of `next` that started the request to the first token.
    pub time_to_first_token: Duration,
    /// Wall time of the decoding forward passes (one per generated token fed back).
    pub decode: Duration,
    /// Decoding forward passes.
    pub decode_tokens: usize,
    /// Latency between consecutive tokens (forward pass and sampling), median.
    pub latency_p50: Duration,
    /// Same, 95th percentile.
    pub latency_p95: Duration,
    /// Whole request.
    pub total: Duration,
    /// Peak resident memory of the process (`VmHWM`), when the platform reports it.
    pub peak_rss_bytes: Option<u64>,
}

fn per_second(n: usize, d: Duration) -> f64 {
    if d.is_zero() {
        0.0
    } else {
        n as f64 / d.as_secs_f64()
    }
}

/// Nearest-rank percentile of sorted values.
pub fn percentile(sorted: &[Duration], q: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

impl GenerationMetrics {
    /// Prompt tokens per second of the prefill.
    pub fn prefill_tokens_per_second(&self) -> f64 {
        per_second(self.prompt_tokens, self.prefill)
    }

    /// Tokens per second of the decoding passes.
    pub fn decode_tokens_per_second(&self) -> f64 {
        per_second(self.decode_tokens, self.decode)
    }

    /// Sets the latency percentiles from the inter-token latencies.
    pub(crate) fn set_latencies(&mut self, latencies: &mut [Duration]) {
        latencies.sort();
        self.latency_p50 = percentile(latencies, 0.50);
        self.latency_p95 = percentile(latencies, 0.95);
    }
}

impl fmt::Display for GenerationMetrics {
    /// One line, e.g. `prompt 12 tok (reused 0) | ttft 35.1 ms | prefill 410.2 tok/s | decode
    /// 52.3 tok/s (31 tok) | latency p50 19.0 ms p95 21.4 ms | peak RSS 112.4 MiB`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "prompt {} tok (reused {}) | ttft {:.1} ms | prefill {:.1} tok/s | decode {:.1} tok/s ({} tok) | latency p50 {:.1} ms p95 {:.1} ms",
            self.prompt_tokens,
            self.reused_tokens,
            ms(self.time_to_first_token),
            self.prefill_tokens_per_second(),
            self.decode_tokens_per_second(),
            self.generated_tokens,
            ms(self.latency_p50),
            ms(self.latency_p95),
        )?;
        match self.peak_rss_bytes {
            Some(b) => write!(f, " | peak RSS {:.1} MiB", b as f64 / (1024.0 * 1024.0)),
            None => write!(f, " | peak RSS n/a"),
        }
    }
}

/// The process's peak resident memory in bytes (`VmHWM` of `/proc/self/status`), `None` where the
/// file does not exist (not Linux) or has no such line.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut l: Vec<Duration> = (1..=20).rev().map(Duration::from_millis).collect();
        let mut m = GenerationMetrics::default();
        m.set_latencies(&mut l);
        assert_eq!(m.latency_p50, Duration::from_millis(10));
        assert_eq!(m.latency_p95, Duration::from_millis(19));
        m.set_latencies(&mut []);
        assert_eq!(m.latency_p95, Duration::ZERO);
    }

    #[test]
    fn peak_rss_is_read_on_linux() {
        if cfg!(target_os = "linux") {
            assert!(peak_rss_bytes().unwrap() > 0);
        }
    }
}

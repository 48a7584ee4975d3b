//! Histograms of durations as plain counts, which series can sum when they fold and a
//! snapshot keeps as they were; `prometheus-client` encodes them.

use std::ops::AddAssign;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Unit;

/// The buckets' upper bounds, in seconds: from a loopback RTT to a SYN retransmitted three
/// times, about three to a step.
pub const BOUNDS: [f64; 11] = [0.0001, 0.0003, 0.001, 0.003, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0];

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Histogram {
    /// Observations per bucket (not cumulative); the last bucket is beyond every bound.
    counts: [u64; BOUNDS.len() + 1],
    sum: Duration,
}

impl Histogram {
    /// A histogram of one observation.
    pub fn of(value: Duration) -> Histogram {
        let mut histogram = Histogram::default();
        histogram.observe(value);
        histogram
    }

    pub fn observe(&mut self, value: Duration) {
        let seconds = value.as_secs_f64();
        let bucket = BOUNDS.iter().position(|&bound| seconds <= bound).unwrap_or(BOUNDS.len());
        self.counts[bucket] += 1;
        self.sum += value;
    }

    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }
}

impl AddAssign<&Histogram> for Histogram {
    fn add_assign(&mut self, other: &Histogram) {
        self.counts.iter_mut().zip(other.counts).for_each(|(count, more)| *count += more);
        self.sum += other.sum;
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> std::fmt::Result {
        let bounds = BOUNDS.iter().copied().chain([f64::INFINITY]);
        let buckets: Vec<(f64, u64)> = bounds.zip(self.counts).collect();
        encoder.encode_histogram::<NoLabelSet>(self.sum.as_secs_f64(), self.count(), &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Histograms in seconds by label set: one metric of a registry.
#[derive(Debug)]
pub struct HistogramFamily {
    /// The name without its unit, which the encoding adds.
    pub name: &'static str,
    pub help: &'static str,
    pub series: Vec<(Vec<(String, String)>, Histogram)>,
}

impl Collector for HistogramFamily {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        if self.series.is_empty() {
            return Ok(());
        }
        let mut metric =
            encoder.encode_descriptor(self.name, self.help, Some(&Unit::Seconds), MetricType::Histogram)?;
        for (labels, histogram) in &self.series {
            histogram.encode(metric.encode_family(labels)?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_observation_counts_in_the_first_bucket_whose_bound_it_does_not_pass() {
        let mut histogram = Histogram::of(Duration::from_micros(100));
        histogram.observe(Duration::from_micros(101));
        histogram += &Histogram::of(Duration::from_secs(11));
        let mut expected = [0; BOUNDS.len() + 1];
        (expected[0], expected[1], expected[BOUNDS.len()]) = (1, 1, 1);
        assert_eq!(histogram.counts, expected);
        assert_eq!((histogram.count(), histogram.sum), (3, Duration::from_micros(11_000_201)));
    }
}

//! What the event loop publishes after each interval for the server to read: the registry,
//! encoded on the server's thread when first asked for, once per format.

use std::sync::OnceLock;

use hyper::body::Bytes;
use prometheus_client::encoding::{prometheus_text, text};
use prometheus_client::registry::Registry;

/// The two text formats a scraper can ask for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    OpenMetrics,
    /// Version 0.0.4, for scrapers that do not ask for OpenMetrics.
    PrometheusText,
}

impl Format {
    /// OpenMetrics when the `Accept` header lists it (Prometheus does, first), else the
    /// Prometheus text format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let openmetrics = accept.into_iter().flat_map(|accept| accept.split(',')).any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let refused =
                |param: &str| param.strip_prefix("q=").and_then(|q| q.parse::<f32>().ok()) == Some(0.0);
            parts.next() == Some("application/openmetrics-text") && !parts.any(refused)
        });
        if openmetrics {
            Format::OpenMetrics
        } else {
            Format::PrometheusText
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::PrometheusText => prometheus_text::CONTENT_TYPE,
        }
    }
}

#[derive(Debug, Default)]
pub struct Snapshot {
    registry: Registry,
    openmetrics: OnceLock<Bytes>,
    prometheus_text: OnceLock<Bytes>,
}

impl Snapshot {
    pub fn new(registry: Registry) -> Snapshot {
        Snapshot { registry, ..Snapshot::default() }
    }

    /// The registry in `format`; scrapes of one snapshot share one encoding.
    pub fn encoded(&self, format: Format) -> Bytes {
        let (cell, encode): (_, fn(&mut String, &Registry) -> std::fmt::Result) = match format {
            Format::OpenMetrics => (&self.openmetrics, text::encode),
            Format::PrometheusText => (&self.prometheus_text, prometheus_text::encode),
        };
        cell.get_or_init(|| {
            let mut out = String::new();
            encode(&mut out, &self.registry).expect("writing to a String does not fail");
            Bytes::from(out)
        })
        .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_for_scrapers_that_ask_for_it() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        for (accept, format) in [
            (Some(prometheus), Format::OpenMetrics),
            (Some("text/plain;version=0.0.4"), Format::PrometheusText),
            (Some("application/openmetrics-text; q=0, text/plain"), Format::PrometheusText),
            (Some("*/*"), Format::PrometheusText),
            (None, Format::PrometheusText),
        ] {
            assert_eq!(Format::negotiate(accept), format, "{accept:?}");
        }
    }
}

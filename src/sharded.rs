//! Metrics that every request updates, kept in one copy per shard of threads.
//!
//! A Prometheus counter or histogram is a few atomic counts, and every request thread adds
//! to the same ones: the cache lines holding them move between cores on nearly every
//! request, and the atomic additions wait for them (`bench/atomics.py` found the request
//! counter, the two duration histograms and the in-flight gauge among the slowest atomics of
//! `logging` and `upstream_response_filter`). Here each thread updates the copy of its
//! shard ([`shard`]), and the registry is shown their sum ([`Sharded`] is the registered
//! collector), so `/metrics` reads as before: the same names, help, labels and values.

use std::sync::{Arc, OnceLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Metric, MetricFamily, MetricType};

use crate::upstream::thread_index;

/// How many copies: request threads beyond this many share copies (still correct, only
/// contended again).
pub const SHARDS: usize = 16;

/// This thread's shard: its [`thread_index`], so threads take the shards in turn.
pub fn shard() -> usize {
    thread_index() % SHARDS
}

/// One metric (or metric vec) in [`SHARDS`] copies, registered as one: its families are the
/// copies' summed.
#[derive(Clone)]
pub struct Sharded<C> {
    copies: Arc<[C]>,
}

impl<C: Collector> Sharded<C> {
    pub fn new(
        make: impl Fn() -> Result<C, prometheus::Error>,
    ) -> Result<Sharded<C>, prometheus::Error> {
        let copies = (0..SHARDS).map(|_| make()).collect::<Result<Vec<C>, _>>()?;
        Ok(Sharded {
            copies: copies.into(),
        })
    }

    /// This thread's copy.
    pub fn mine(&self) -> &C {
        &self.copies[shard()]
    }

    /// Every copy, in shard order.
    pub fn copies(&self) -> &[C] {
        &self.copies
    }

    /// A child (a vec's series) in every copy, in shard order, to keep and count into with
    /// [`PerShard::mine`].
    pub fn each<T>(&self, child: impl Fn(&C) -> T) -> PerShard<T> {
        PerShard(self.copies.iter().map(child).collect())
    }
}

impl<C: Collector> Collector for Sharded<C> {
    fn desc(&self) -> Vec<&Desc> {
        self.copies[0].desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut sum = self.copies[0].collect();
        for copy in &self.copies[1..] {
            for family in copy.collect() {
                match sum.iter_mut().find(|f| f.name() == family.name()) {
                    Some(into) => add_family(into, family),
                    None => sum.push(family),
                }
            }
        }
        sum
    }
}

/// A child of a [`Sharded`] metric vec in every copy (see [`Sharded::each`]).
pub struct PerShard<T>(Box<[T]>);

impl<T> PerShard<T> {
    /// This thread's copy.
    pub fn mine(&self) -> &T {
        // `Sharded::each` made one per shard.
        &self.0[shard()]
    }

    /// Every copy.
    pub fn all(&self) -> &[T] {
        &self.0
    }
}

/// Kept children, made on first use (as [`crate::metrics::CounterSlots`] keeps its counters).
pub type LazyPerShard<T> = OnceLock<PerShard<T>>;

/// Adds `family`'s series into `into`'s, series by series (matched by their labels).
fn add_family(into: &mut MetricFamily, mut family: MetricFamily) {
    let kind = into.get_field_type();
    for metric in family.take_metric() {
        let same = into
            .mut_metric()
            .iter_mut()
            .find(|m| m.get_label() == metric.get_label());
        match same {
            Some(same) => add_metric(kind, same, &metric),
            None => into.mut_metric().push(metric),
        }
    }
}

fn add_metric(kind: MetricType, into: &mut Metric, add: &Metric) {
    match kind {
        MetricType::COUNTER => {
            let mut counter = into.get_counter().clone();
            counter.set_value(counter.get_value() + add.get_counter().get_value());
            into.set_counter(counter);
        }
        MetricType::GAUGE => {
            let mut gauge = into.get_gauge().clone();
            gauge.set_value(gauge.get_value() + add.get_gauge().get_value());
            into.set_gauge(gauge);
        }
        MetricType::HISTOGRAM => {
            let mut hist = into.get_histogram().clone();
            let other = add.get_histogram();
            hist.set_sample_count(hist.get_sample_count() + other.get_sample_count());
            hist.set_sample_sum(hist.get_sample_sum() + other.get_sample_sum());
            // The copies share their bucket bounds (made with the same options).
            let buckets = hist
                .get_bucket()
                .iter()
                .zip(other.get_bucket())
                .map(|(a, b)| {
                    let mut bucket = a.clone();
                    bucket.set_cumulative_count(a.cumulative_count() + b.cumulative_count());
                    bucket
                })
                .collect();
            hist.set_bucket(buckets);
            into.set_histogram(hist);
        }
        // Not made sharded.
        MetricType::SUMMARY | MetricType::UNTYPED => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::{
        Encoder, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry, TextEncoder,
    };

    fn text(registry: &Registry) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&registry.gather(), &mut out)
            .expect("encode");
        String::from_utf8(out).expect("UTF-8")
    }

    /// Counts made on more threads than there are shards (so in every copy, some shared)
    /// read exactly as the same counts made into one unsharded metric each.
    #[test]
    fn the_copies_read_as_one_metric_would() {
        let counter = || IntCounterVec::new(Opts::new("c_total", "A counter."), &["route"]);
        let hist =
            || HistogramVec::new(HistogramOpts::new("h_seconds", "A histogram."), &["route"]);
        let gauge = || IntGauge::new("g", "A gauge.");
        let (sharded, plain) = (Registry::new(), Registry::new());
        let (c, h, g) = (
            Sharded::new(counter).unwrap(),
            Sharded::new(hist).unwrap(),
            Sharded::new(gauge).unwrap(),
        );
        let (pc, ph, pg) = (counter().unwrap(), hist().unwrap(), gauge().unwrap());
        sharded.register(Box::new(c.clone())).unwrap();
        sharded.register(Box::new(h.clone())).unwrap();
        sharded.register(Box::new(g.clone())).unwrap();
        plain.register(Box::new(pc.clone())).unwrap();
        plain.register(Box::new(ph.clone())).unwrap();
        plain.register(Box::new(pg.clone())).unwrap();

        let routes = ["a", "b", "c"];
        std::thread::scope(|scope| {
            for t in 0..SHARDS + 4 {
                let (c, h, g, pc, ph, pg) = (&c, &h, &g, &pc, &ph, &pg);
                scope.spawn(move || {
                    // A series kept the way RouteSeries keeps one.
                    let kept = h.each(|copy| copy.with_label_values(&["kept"]));
                    for i in 0..50 {
                        // Only a few routes per thread: some copies never see some series.
                        let route = routes[(t + i % 2) % routes.len()];
                        c.mine().with_label_values(&[route]).inc();
                        pc.with_label_values(&[route]).inc();
                        // Quarters add up exactly in any order.
                        let seconds = 0.25 * ((t + i) % 9) as f64;
                        h.mine().with_label_values(&[route]).observe(seconds);
                        ph.with_label_values(&[route]).observe(seconds);
                        kept.mine().observe(seconds);
                        ph.with_label_values(&["kept"]).observe(seconds);
                        g.mine().inc();
                        pg.inc();
                    }
                    g.mine().sub(t as i64);
                    pg.sub(t as i64);
                });
            }
        });
        let want = text(&plain);
        assert!(want.contains("c_total{route=\"a\"}"), "{want}");
        assert!(
            want.contains("h_seconds_bucket{route=\"kept\",le=\"0.5\"}"),
            "{want}"
        );
        assert_eq!(text(&sharded), want);
    }

    #[test]
    fn a_thread_keeps_its_shard() {
        let first = shard();
        assert!(first < SHARDS);
        assert_eq!(shard(), first);
        let other = std::thread::spawn(shard).join().expect("the thread");
        assert!(other < SHARDS);
    }
}

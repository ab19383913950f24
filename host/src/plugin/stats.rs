//! What one plugin's calls did since it was loaded: calls by export, failures by kind and
//! call times, in plain atomics (a few relaxed adds per call, no lock, no label lookup).
//!
//! [`crate::metrics::Metrics::scrape`] reads them into Prometheus at scrape time; the
//! admin API's `/plugins` shows them as they are. A [`PluginStats`] belongs to one
//! [`Plugin`](super::Plugin) and lives as long as it (a reload that keeps the plugin keeps
//! counting into it); the metrics hold their own `Arc` to fold in a replaced plugin's
//! last counts.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use super::bindings::exports;
use super::{PluginError, Role};

/// Upper bounds (nanoseconds) of the call-time buckets: 10 µs to 5 s (then `+Inf`).
const BUCKETS_NANOS: [u64; 18] = [
    10_000,
    25_000,
    50_000,
    100_000,
    250_000,
    500_000,
    1_000_000,
    2_500_000,
    5_000_000,
    10_000_000,
    25_000_000,
    50_000_000,
    100_000_000,
    250_000_000,
    500_000_000,
    1_000_000_000,
    2_500_000_000,
    5_000_000_000,
];

/// Buckets of one call-time histogram: [`BUCKETS_NANOS`] and `+Inf`.
pub const CALL_TIME_BUCKETS: usize = BUCKETS_NANOS.len() + 1;

/// The upper bound of call-time bucket `index` in seconds (`f64::MAX` for `+Inf`, as
/// `prometheus-client` writes it).
pub fn bucket_bound_seconds(index: usize) -> f64 {
    BUCKETS_NANOS
        .get(index)
        .map_or(f64::MAX, |&nanos| nanos as f64 / 1e9)
}

/// A guest function the host calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Export {
    Handle,
    OnRequest,
    OnResponse,
    Authorize,
    OnConnect,
    OnMessage,
    OnDisconnect,
}

/// How many [`Export`]s there are.
const EXPORTS: usize = 7;

impl Export {
    pub const ALL: [Export; EXPORTS] = [
        Export::Handle,
        Export::OnRequest,
        Export::OnResponse,
        Export::Authorize,
        Export::OnConnect,
        Export::OnMessage,
        Export::OnDisconnect,
    ];

    /// The exports a role calls (a `wasi:http` handler's `handle` included).
    pub fn of(role: Role) -> &'static [Export] {
        match role {
            Role::Handler => &[Export::Handle],
            Role::Filter => &[Export::OnRequest, Export::OnResponse],
            Role::Authorizer => &[Export::Authorize],
            Role::WebSocket => &[Export::OnConnect, Export::OnMessage, Export::OnDisconnect],
        }
    }

    /// The role that calls it.
    pub fn role(self) -> Role {
        match self {
            Export::Handle => Role::Handler,
            Export::OnRequest | Export::OnResponse => Role::Filter,
            Export::Authorize => Role::Authorizer,
            Export::OnConnect | Export::OnMessage | Export::OnDisconnect => Role::WebSocket,
        }
    }

    /// Its name in the WIT world (and the `export` label).
    pub fn as_str(self) -> &'static str {
        match self {
            Export::Handle => exports::HANDLE,
            Export::OnRequest => exports::ON_REQUEST,
            Export::OnResponse => exports::ON_RESPONSE,
            Export::Authorize => exports::AUTHORIZE,
            Export::OnConnect => exports::ON_CONNECT,
            Export::OnMessage => exports::ON_MESSAGE,
            Export::OnDisconnect => exports::ON_DISCONNECT,
        }
    }
}

/// The kinds of failed call, as [`PluginError::reason`] names them, in counter order.
pub const FAILURE_KINDS: [&str; 6] = [
    "plugin_busy",
    "plugin_timeout",
    "plugin_memory",
    "plugin_trap",
    "plugin_bad_output",
    "plugin_instantiate",
];

fn failure_slot(error: &PluginError) -> usize {
    match error {
        PluginError::Busy => 0,
        PluginError::Timeout(_) => 1,
        PluginError::Memory(_) => 2,
        PluginError::Trap(_) => 3,
        PluginError::BadOutput(_) => 4,
        PluginError::Instantiate(_) => 5,
    }
}

/// One export's call times.
#[derive(Debug, Default)]
struct CallTimes {
    /// Calls per bucket (not cumulative).
    buckets: [AtomicU64; CALL_TIME_BUCKETS],
    sum_nanos: AtomicU64,
}

/// The counters of one plugin.
#[derive(Debug)]
pub struct PluginStats {
    /// The exports the component has, of [`Export::ALL`] (by the roles it can play).
    exports: [bool; EXPORTS],
    calls: [AtomicU64; EXPORTS],
    failures: [AtomicU64; FAILURE_KINDS.len()],
    times: [CallTimes; EXPORTS],
    /// Instances created (stores made): one per request unless instances are reused.
    instances: AtomicU64,
}

impl PluginStats {
    /// Counters for a component that can play `roles`.
    pub fn new(roles: &[Role]) -> PluginStats {
        let has = |export| roles.iter().any(|&role| Export::of(role).contains(&export));
        PluginStats {
            exports: Export::ALL.map(has),
            calls: Default::default(),
            failures: Default::default(),
            times: Default::default(),
            instances: AtomicU64::new(0),
        }
    }

    /// Counts an instance created for a request (a fresh store).
    pub fn instantiated(&self) {
        self.instances.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a call that never ran (refused before it got an instance).
    pub fn refused(&self, export: Export, error: &PluginError) {
        self.calls[export as usize].fetch_add(1, Ordering::Relaxed);
        self.failures[failure_slot(error)].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a call that ran for `elapsed` (instantiation included) and how it ended.
    pub fn ran(&self, export: Export, elapsed: Duration, error: Option<&PluginError>) {
        let slot = export as usize;
        self.calls[slot].fetch_add(1, Ordering::Relaxed);
        if let Some(error) = error {
            self.failures[failure_slot(error)].fetch_add(1, Ordering::Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        let times = &self.times[slot];
        // `le` buckets: the first bound at or above the time.
        let bucket = BUCKETS_NANOS.partition_point(|&bound| bound < nanos);
        times.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        times.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Counts a failure the caller found after the call returned: the host refused its
    /// output ([`PluginError::BadOutput`]). The call itself was counted by [`ran`](Self::ran).
    pub fn output_refused(&self, error: &PluginError) {
        self.failures[failure_slot(error)].fetch_add(1, Ordering::Relaxed);
    }

    /// All calls so far, failed ones included.
    pub fn calls(&self) -> u64 {
        self.calls.iter().map(|c| c.load(Ordering::Relaxed)).sum()
    }

    /// All failed calls so far.
    pub fn failures(&self) -> u64 {
        self.failures
            .iter()
            .map(|c| c.load(Ordering::Relaxed))
            .sum()
    }

    /// The counters now. Each is read on its own: a call that ends meanwhile may show in
    /// one and not yet in another.
    pub fn snapshot(&self) -> StatsSnapshot {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            exports: self.exports,
            calls: self.calls.each_ref().map(load),
            failures: self.failures.each_ref().map(load),
            instances: load(&self.instances),
            times: self.times.each_ref().map(|t| TimesSnapshot {
                buckets: t.buckets.each_ref().map(load),
                sum_nanos: load(&t.sum_nanos),
            }),
        }
    }
}

/// [`PluginStats`] at one moment.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StatsSnapshot {
    exports: [bool; EXPORTS],
    calls: [u64; EXPORTS],
    failures: [u64; FAILURE_KINDS.len()],
    times: [TimesSnapshot; EXPORTS],
    instances: u64,
}

/// One export's call times at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TimesSnapshot {
    /// Calls per bucket of [`bucket_bound_seconds`] (not cumulative).
    pub buckets: [u64; CALL_TIME_BUCKETS],
    pub sum_nanos: u64,
}

impl TimesSnapshot {
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// What was added since `before` (of the same counters).
    pub fn since(&self, before: &TimesSnapshot) -> TimesSnapshot {
        let mut buckets = self.buckets;
        for (now, was) in buckets.iter_mut().zip(before.buckets) {
            *now = now.saturating_sub(was);
        }
        TimesSnapshot {
            buckets,
            sum_nanos: self.sum_nanos.saturating_sub(before.sum_nanos),
        }
    }
}

impl StatsSnapshot {
    /// Every export with whether the component has it and its calls.
    pub fn calls(&self) -> impl Iterator<Item = (Export, bool, u64)> + '_ {
        Export::ALL
            .into_iter()
            .zip(self.exports)
            .zip(self.calls)
            .map(|((export, has), n)| (export, has, n))
    }

    /// Every failure kind with its count.
    pub fn failures(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        FAILURE_KINDS.into_iter().zip(self.failures)
    }

    /// Instances created.
    pub fn instances(&self) -> u64 {
        self.instances
    }

    /// The call times of `export`.
    pub fn times(&self, export: Export) -> &TimesSnapshot {
        &self.times[export as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_le_bounds_from_ten_microseconds_to_five_seconds() {
        assert_eq!(bucket_bound_seconds(0), 0.00001);
        assert_eq!(bucket_bound_seconds(7), 0.0025);
        assert_eq!(bucket_bound_seconds(CALL_TIME_BUCKETS - 2), 5.0);
        assert_eq!(bucket_bound_seconds(CALL_TIME_BUCKETS - 1), f64::MAX);

        let stats = PluginStats::new(&[Role::Handler]);
        for micros in [1, 10, 11, 2_500, 6_000_000] {
            stats.ran(Export::Handle, Duration::from_micros(micros), None);
        }
        let times = *stats.snapshot().times(Export::Handle);
        let mut expected = [0; CALL_TIME_BUCKETS];
        expected[0] = 2; // 1 µs and exactly 10 µs
        expected[1] = 1; // 11 µs
        expected[7] = 1; // exactly 2.5 ms
        expected[CALL_TIME_BUCKETS - 1] = 1; // 6 s
        assert_eq!(times.buckets, expected);
        assert_eq!(times.count(), 5);
        assert_eq!(times.sum_nanos, 6_002_522_000);
    }

    #[test]
    fn calls_count_by_export_and_failures_by_kind() {
        let stats = PluginStats::new(&[Role::Filter]);
        stats.refused(Export::OnRequest, &PluginError::Busy);
        stats.ran(Export::OnRequest, Duration::from_micros(40), None);
        let trap = PluginError::Trap("unreachable".to_owned());
        stats.ran(Export::OnResponse, Duration::from_micros(40), Some(&trap));
        assert_eq!((stats.calls(), stats.failures()), (3, 2));

        let snapshot = stats.snapshot();
        let calls: Vec<_> = snapshot.calls().collect();
        assert_eq!(
            calls,
            [
                (Export::Handle, false, 0),
                (Export::OnRequest, true, 2),
                (Export::OnResponse, true, 1),
                (Export::Authorize, false, 0),
                (Export::OnConnect, false, 0),
                (Export::OnMessage, false, 0),
                (Export::OnDisconnect, false, 0),
            ]
        );
        let failures: Vec<_> = snapshot.failures().filter(|(_, n)| *n > 0).collect();
        assert_eq!(failures, [("plugin_busy", 1), ("plugin_trap", 1)]);
        // A refused call has no time.
        assert_eq!(snapshot.times(Export::OnRequest).count(), 1);
        for error in [
            PluginError::Busy,
            PluginError::Timeout(Duration::ZERO),
            PluginError::Memory(0),
            PluginError::Trap(String::new()),
            PluginError::BadOutput(String::new()),
            PluginError::Instantiate(String::new()),
        ] {
            assert_eq!(FAILURE_KINDS[failure_slot(&error)], error.reason());
        }
    }
}

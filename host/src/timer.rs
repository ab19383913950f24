//! Request timeouts on timers that are re-armed rather than made anew.
//!
//! `tokio::time::timeout` makes a timer per call: it is registered in the runtime's timer
//! wheel when first polled and taken out again when dropped, each under the wheel's lock.
//! A proxied request runs two such timeouts (the request's and the upstream attempt's),
//! ≈ 1,000 instructions per request between them. A timer kept by the connection instead
//! (the client connection for the request timeout, the upstream connection for the
//! attempt's) is re-armed for each request: a later deadline than the one it is
//! registered for is one atomic store, and the wheel moves the timer only when it reaches
//! the earlier deadline (tokio's `TimerEntry::reset`).
//!
//! A timer left armed after its request may still fire once: it then wakes the task that
//! last polled it (the connection's), which finds nothing to do.
//!
//! A timer is [`Gated`]: the request's future is polled at every wake-up of its task, the
//! timer only once per arming and when it fired.

use std::future::Future;
use std::pin::{Pin, pin};
use std::sync::Mutex;
use std::task::Poll;

use tokio::time::{Instant, Sleep};

use crate::gate::Gated;

/// A request timer.
pub type Timer = Gated<Sleep>;

/// A timer for `deadline`: `timer` re-armed when there is one, else a new one.
pub fn arm(timer: Option<Timer>, deadline: Instant) -> Timer {
    match timer {
        Some(mut timer) => {
            timer.inner_mut().reset(deadline);
            timer
        }
        None => Gated::new(tokio::time::sleep_until(deadline)),
    }
}

/// Runs `future` until it completes (`Some`) or `timer` fires (`None`). The future is
/// polled first, so one that is ready never looks at the timer.
pub async fn within<F: Future>(timer: &mut Timer, future: F) -> Option<F::Output> {
    let mut future = pin!(future);
    std::future::poll_fn(|cx| {
        if let Poll::Ready(output) = future.as_mut().poll(cx) {
            return Poll::Ready(Some(output));
        }
        match Pin::new(&mut *timer).poll(cx) {
            Poll::Ready(()) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    })
    .await
}

/// Where a connection keeps its timer between requests. Concurrent requests (HTTP/2)
/// find it taken and make their own; the last one back leaves its timer here.
#[derive(Default)]
pub struct TimerSlot(Mutex<Option<Timer>>);

impl TimerSlot {
    /// A timer for `deadline`, the slot's own when it is free.
    pub fn take(&self, deadline: Instant) -> Timer {
        let kept = self.0.lock().map(|mut slot| slot.take()).unwrap_or(None);
        arm(kept, deadline)
    }

    /// Gives `timer` back for the connection's next request.
    pub fn put(&self, timer: Timer) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(timer);
        }
    }
}

impl std::fmt::Debug for TimerSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TimerSlot")
    }
}

/// A copy starts empty: a timer belongs to one connection.
impl Clone for TimerSlot {
    fn clone(&self) -> TimerSlot {
        TimerSlot::default()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[tokio::test]
    async fn a_rearmed_timer_fires_at_its_new_deadline_not_its_old_one() {
        let slot = TimerSlot::default();
        let start = Instant::now();
        let mut timer = slot.take(start + 50 * MS);
        // Polled once (the future is pending at first), so registered for 50 ms.
        assert_eq!(within(&mut timer, tokio::task::yield_now()).await, Some(()));
        slot.put(timer);

        // Re-armed later: it does not fire at the first deadline, only at the second.
        let mut timer = slot.take(start + 300 * MS);
        let never = std::future::pending::<()>();
        assert_eq!(within(&mut timer, never).await, None);
        assert!(start.elapsed() >= 300 * MS);
        slot.put(timer);

        // Fired, then re-armed: it fires again.
        let again = Instant::now();
        let mut timer = slot.take(again + 50 * MS);
        let slow = tokio::time::sleep(10 * MS);
        assert_eq!(within(&mut timer, slow).await, Some(()));
        let never = std::future::pending::<()>();
        assert_eq!(within(&mut timer, never).await, None);
        assert!(again.elapsed() >= 50 * MS);
    }

    #[tokio::test]
    async fn an_earlier_deadline_is_kept_too() {
        let slot = TimerSlot::default();
        let start = Instant::now();
        let mut timer = slot.take(start + Duration::from_secs(30));
        assert_eq!(within(&mut timer, tokio::task::yield_now()).await, Some(()));
        slot.put(timer);
        let mut timer = slot.take(start + 50 * MS);
        let fired = tokio::time::timeout(Duration::from_secs(10), async {
            within(&mut timer, std::future::pending::<()>()).await
        });
        assert_eq!(fired.await, Ok(None));
        assert!(start.elapsed() >= 50 * MS);
    }
}

//! [`Gated`]: a future a task keeps polling alongside others, looked at only when it is what
//! woke the task.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;

/// A future polled only once a wake-up of its own came (and on its first poll), so that it
/// is cheap to keep beside the work of a connection's task, which polls it at every
/// wake-up of the task (several per proxied request): the drain signal's `cancelled()`
/// takes the token's lock each time it is polled (~165 instructions), a `Sleep` registers
/// its waker with the timer (~120). Gated, the inner future is given a waker of its own,
/// which notes that it fired and then wakes the task; a poll in between costs a load and a
/// waker comparison.
pub struct Gated<F> {
    inner: Pin<Box<F>>,
    signal: Arc<Signal>,
    /// `signal` as the waker the inner future is polled with.
    waker: Waker,
    /// The task's waker as last registered with `signal`.
    task: Option<Waker>,
    armed: bool,
}

#[derive(Default)]
struct Signal {
    fired: AtomicBool,
    task: AtomicWaker,
}

impl std::task::Wake for Signal {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        // Before the task's waker is taken: `fired` false means it is still registered.
        self.fired.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl<F: Future> Gated<F> {
    pub fn new(inner: F) -> Gated<F> {
        let signal = Arc::<Signal>::default();
        Gated {
            inner: Box::pin(inner),
            waker: Waker::from(signal.clone()),
            signal,
            task: None,
            armed: false,
        }
    }

    /// The inner future, to change in place (a `Sleep` re-armed). The next poll polls it,
    /// whatever woke the task: a changed future may need to register again (a `Sleep`
    /// that fired gave its waker up).
    pub fn inner_mut(&mut self) -> Pin<&mut F> {
        self.armed = false;
        self.inner.as_mut()
    }
}

impl<F: Future> Future for Gated<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = &mut *self;
        // Registered before `fired` is taken, so that a wake-up from now on reaches the
        // task that polls now. A wake-up took the registered waker (and set `fired`); a
        // different task polls; or nothing was registered yet: register.
        let fired = this.signal.fired.load(Ordering::Acquire);
        let registered = this
            .task
            .as_ref()
            .is_some_and(|task| task.will_wake(cx.waker()));
        if fired || !registered {
            this.signal.task.register(cx.waker());
            this.task = Some(cx.waker().clone());
        }
        if this.armed && !fired {
            return Poll::Pending;
        }
        // Taken before the inner future is polled: what fires from now on is either seen
        // by this poll or wakes the task again.
        if fired {
            this.signal.fired.store(false, Ordering::Release);
        }
        this.armed = true;
        this.inner
            .as_mut()
            .poll(&mut Context::from_waker(&this.waker))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::Mutex;
    use std::sync::atomic::AtomicUsize;

    use super::*;

    /// One poll of `gated`, as its task would make it.
    pub(crate) async fn poll_once<F: Future>(gated: &mut Gated<F>) -> Poll<F::Output> {
        std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *gated).poll(cx))).await
    }

    #[tokio::test]
    async fn a_gated_future_is_polled_only_when_its_own_wake_up_came() {
        let polls = Arc::new(AtomicUsize::new(0));
        let waker = Arc::new(Mutex::new(None::<std::task::Waker>));
        let inner = {
            let (polls, waker) = (polls.clone(), waker.clone());
            std::future::poll_fn(move |cx| {
                let n = polls.fetch_add(1, Ordering::Relaxed) + 1;
                *waker.lock().expect("waker") = Some(cx.waker().clone());
                if n == 3 {
                    Poll::Ready(n)
                } else {
                    Poll::Pending
                }
            })
        };
        let mut gated = Gated::new(inner);
        for _ in 0..4 {
            assert!(poll_once(&mut gated).await.is_pending());
        }
        assert_eq!(
            polls.load(Ordering::Relaxed),
            1,
            "the task's other wake-ups skip it"
        );
        let wake = || waker.lock().expect("waker").take().expect("a waker").wake();
        wake();
        assert!(poll_once(&mut gated).await.is_pending());
        assert!(poll_once(&mut gated).await.is_pending());
        assert_eq!(polls.load(Ordering::Relaxed), 2);
        wake();
        assert_eq!(poll_once(&mut gated).await, Poll::Ready(3));
    }

    #[tokio::test]
    async fn a_wake_up_after_one_was_handled_still_reaches_the_task() {
        // A timer fires twice; the task only waits on the gate each time.
        let mut gated = Gated::new(tokio::time::sleep(std::time::Duration::from_millis(20)));
        tokio::time::timeout(std::time::Duration::from_secs(10), &mut gated)
            .await
            .expect("fired");
        let again = tokio::time::Instant::now() + std::time::Duration::from_millis(20);
        gated.inner_mut().reset(again);
        tokio::time::timeout(std::time::Duration::from_secs(10), &mut gated)
            .await
            .expect("fired again, through the gate");
        assert!(tokio::time::Instant::now() >= again);
    }
}

// Palisade: this module is an addition (see PATCHES.md, patch 20).

//! A timeout for one I/O operation at a time, on one timer its session keeps.
//!
//! [`pingora_timeout::timeout`] reads the clock at every call (to see that its clock thread
//! runs), and for an operation that has to wait it reads the clock again and subscribes to a
//! shared timer: a thread-local `RwLock`ed map, two `Arc`s, a boxed future and tokio's
//! `Notify`, whose waiter list takes a lock to join and another to leave. An upstream
//! session does a few such operations per request.
//!
//! [`IoTimer::limit`] polls the operation first and reads the clock only when it has to wait.
//! The session's timer is a tokio [`Sleep`] moved to the new deadline at each wait, which for
//! a later deadline is one atomic store in tokio. A session that ends leaves its timer to the
//! next session on its thread (of the same runtime): a timer made and dropped per request
//! takes tokio's driver lock twice, for the wheel's insert and removal, which made the
//! requests dearer in CPU time than the shared timer they replaced (`bench/ab.sh`, see
//! PATCHES.md) though it ran fewer instructions.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::runtime::{Handle, Id};
use tokio::time::{Instant, Sleep};

/// Timers left by ended sessions, kept per thread for the next ones.
const SPARES: usize = 64;

/// A timer and the runtime whose driver it belongs to.
type RuntimeSleep = (Id, Pin<Box<Sleep>>);

thread_local! {
    static SPARE: RefCell<Vec<RuntimeSleep>> = const { RefCell::new(Vec::new()) };
}

/// The operation did not finish in its time.
#[derive(Debug)]
pub struct Elapsed;

/// A session's timer for its I/O operations, one at a time.
#[derive(Default)]
pub struct IoTimer {
    sleep: Option<RuntimeSleep>,
}

impl Drop for IoTimer {
    fn drop(&mut self) {
        let Some(sleep) = self.sleep.take() else {
            return;
        };
        // Still set for its last deadline: the next session moves it to a later one without
        // the driver's lock. A spare going off in the meantime wakes nobody who waits.
        let _ = SPARE.try_with(|spare| {
            if let Ok(mut spare) = spare.try_borrow_mut() {
                if spare.len() < SPARES {
                    spare.push(sleep);
                }
            }
        });
    }
}

impl std::fmt::Debug for IoTimer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoTimer")
            .field("made", &self.sleep.is_some())
            .finish()
    }
}

impl IoTimer {
    /// Runs `operation`, failing with [`Elapsed`] if it has not finished within `limit` of
    /// its first wait.
    pub async fn limit<F: Future>(
        &mut self,
        limit: Duration,
        operation: F,
    ) -> Result<F::Output, Elapsed> {
        let mut operation = std::pin::pin!(operation);
        let mut armed = false;
        std::future::poll_fn(|cx| {
            if let Poll::Ready(done) = operation.as_mut().poll(cx) {
                return Poll::Ready(Ok(done));
            }
            if !armed {
                armed = true;
                self.arm(Instant::now() + limit);
            }
            self.poll_expired(cx).map(|()| Err(Elapsed))
        })
        .await
    }

    /// Sets the timer to go off at `deadline`: the session's, a spare of the thread's for
    /// this runtime, or a new one.
    fn arm(&mut self, deadline: Instant) {
        if let Some((_, sleep)) = self.sleep.as_mut() {
            sleep.as_mut().reset(deadline);
            return;
        }
        // Outside a runtime there is no driver to set a timer with (nor any I/O to wait for).
        let Ok(runtime) = Handle::try_current().map(|handle| handle.id()) else {
            return;
        };
        let spare = SPARE
            .try_with(|spare| {
                let mut spare = spare.try_borrow_mut().ok()?;
                // A spare of another runtime (one that ran on this thread before) is dropped.
                while let Some((id, sleep)) = spare.pop() {
                    if id == runtime {
                        return Some(sleep);
                    }
                }
                None
            })
            .ok()
            .flatten();
        let sleep = match spare {
            Some(mut sleep) => {
                sleep.as_mut().reset(deadline);
                sleep
            }
            None => Box::pin(tokio::time::sleep_until(deadline)),
        };
        self.sleep = Some((runtime, sleep));
    }

    /// Whether the timer set by `arm` went off (registering `cx` to be woken when it does).
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.sleep.as_mut() {
            Some((_, sleep)) => sleep.as_mut().poll(cx),
            // Not set (outside a runtime): nothing to wait for.
            None => Poll::Pending,
        }
    }
}

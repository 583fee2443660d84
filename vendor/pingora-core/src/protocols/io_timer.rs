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
//! The session's timer is a tokio [`Sleep`] made at the first wait and moved to the new
//! deadline at the next ones, which for a later deadline is one atomic store in tokio.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::time::{Instant, Sleep};

/// The operation did not finish in its time.
#[derive(Debug)]
pub struct Elapsed;

/// A session's timer for its I/O operations, one at a time.
#[derive(Default)]
pub struct IoTimer {
    sleep: Option<Pin<Box<Sleep>>>,
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

    /// Sets the timer to go off at `deadline`.
    fn arm(&mut self, deadline: Instant) {
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().reset(deadline),
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
        }
    }

    /// Whether the timer set by `arm` went off (registering `cx` to be woken when it does).
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.sleep.as_mut() {
            Some(sleep) => sleep.as_mut().poll(cx),
            // `arm` always makes the timer; without one there is nothing to wait for.
            None => Poll::Pending,
        }
    }
}

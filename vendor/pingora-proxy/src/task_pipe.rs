// Palisade: a bounded channel for the HTTP/1.x proxy's two task pipes (see `PATCHES.md`).

//! The pipes between the two halves of an HTTP/1.x proxied request (`proxy_1to1`): the
//! upstream half sends the response's tasks to the downstream half, and the downstream half
//! the request body's to the upstream half. Both halves run in one task (`try_join!`), one
//! sender and one receiver per pipe, at most `TASK_BUFFER_SIZE` (4) tasks in flight.
//!
//! This is the subset of `tokio::sync::mpsc`'s bounded channel those functions use, with the
//! same semantics: a slot is taken by `reserve` (or `send`) and given back when the receiver
//! takes the task, or when a [`Permit`] is dropped unused; `recv` gives `None` once the sender
//! is gone and the queue empty; `send` and `reserve` fail once the receiver is gone. Every
//! wait is cancel-safe, as tokio's: nothing is taken or lost until a poll returns `Ready`.
//! tokio's channel is built for many senders on many threads (a linked list of 32-slot
//! blocks, a semaphore, an atomic waker); two of them cost about 3.2k instructions per
//! request, 1.3k of it creating and dropping them. Here a mutex nobody contends guards a ring
//! of N slots, in a [`Pipe`] that the function joining the two halves owns and lends to them
//! (patch 11): no allocation and no reference count, as neither half outlives that function.

use std::fmt;
use std::future::poll_fn;
use std::sync::{Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

pub use tokio::sync::mpsc::error::{SendError, TrySendError};

struct State<T, const N: usize> {
    slots: [Option<T>; N],
    head: usize,
    queued: usize,
    reserved: usize,
    sender_gone: bool,
    receiver_gone: bool,
    rx_waker: Option<Waker>,
    tx_waker: Option<Waker>,
}

impl<T, const N: usize> State<T, N> {
    fn has_room(&self) -> bool {
        self.queued + self.reserved < N
    }

    fn wake_rx(&mut self) {
        if let Some(w) = self.rx_waker.take() {
            w.wake();
        }
    }

    fn wake_tx(&mut self) {
        if let Some(w) = self.tx_waker.take() {
            w.wake();
        }
    }
}

type Shared<T, const N: usize> = Mutex<State<T, N>>;

fn lock<T, const N: usize>(shared: &Shared<T, N>) -> MutexGuard<'_, State<T, N>> {
    // A panic while the lock is held leaves the state consistent (every update is a few
    // plain assignments), so a poisoned lock is still usable.
    shared
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn remember(slot: &mut Option<Waker>, cx: &Context<'_>) {
    match slot {
        Some(w) if w.will_wake(cx.waker()) => {}
        _ => *slot = Some(cx.waker().clone()),
    }
}

/// A pipe of at most `N` tasks in flight, lent to its one sender and one receiver by
/// [`Pipe::split`].
pub struct Pipe<T, const N: usize>(Shared<T, N>);

impl<T, const N: usize> Default for Pipe<T, N> {
    fn default() -> Self {
        Pipe(Mutex::new(State {
            slots: std::array::from_fn(|_| None),
            head: 0,
            queued: 0,
            reserved: 0,
            sender_gone: false,
            receiver_gone: false,
            rx_waker: None,
            tx_waker: None,
        }))
    }
}

impl<T, const N: usize> Pipe<T, N> {
    pub fn new() -> Self {
        Self::default()
    }

    /// The pipe's sender and receiver. Split a pipe once: a sender or receiver dropped closes
    /// its end for good.
    pub fn split(&mut self) -> (Sender<'_, T, N>, Receiver<'_, T, N>) {
        let shared = &self.0;
        (Sender(shared), Receiver(shared))
    }
}

pub struct Sender<'p, T, const N: usize>(&'p Shared<T, N>);

pub struct Receiver<'p, T, const N: usize>(&'p Shared<T, N>);

/// A slot taken in the pipe: [`Permit::send`] fills it; dropped unused, it is given back.
pub struct Permit<'a, T, const N: usize> {
    shared: &'a Shared<T, N>,
    used: bool,
}

impl<T, const N: usize> Sender<'_, T, N> {
    fn poll_reserve(&self, cx: &mut Context<'_>) -> Poll<Result<Permit<'_, T, N>, SendError<()>>> {
        let mut state = lock(self.0);
        if state.receiver_gone {
            return Poll::Ready(Err(SendError(())));
        }
        if state.has_room() {
            state.reserved += 1;
            return Poll::Ready(Ok(Permit {
                shared: self.0,
                used: false,
            }));
        }
        remember(&mut state.tx_waker, cx);
        Poll::Pending
    }

    /// Waits for a free slot; fails once the receiver is gone.
    pub async fn reserve(&self) -> Result<Permit<'_, T, N>, SendError<()>> {
        poll_fn(|cx| self.poll_reserve(cx)).await
    }

    /// A free slot now, or why not.
    pub fn try_reserve(&self) -> Result<Permit<'_, T, N>, TrySendError<()>> {
        let mut state = lock(self.0);
        if state.receiver_gone {
            return Err(TrySendError::Closed(()));
        }
        if !state.has_room() {
            return Err(TrySendError::Full(()));
        }
        state.reserved += 1;
        Ok(Permit {
            shared: self.0,
            used: false,
        })
    }

    /// Waits for a free slot and sends `task` in it; gives it back once the receiver is gone.
    pub async fn send(&self, task: T) -> Result<(), SendError<T>> {
        match self.reserve().await {
            Ok(permit) => {
                permit.send(task);
                Ok(())
            }
            Err(_) => Err(SendError(task)),
        }
    }

    /// Whether the receiver is gone.
    pub fn is_closed(&self) -> bool {
        lock(self.0).receiver_gone
    }
}

impl<T, const N: usize> Drop for Sender<'_, T, N> {
    fn drop(&mut self) {
        let mut state = lock(self.0);
        state.sender_gone = true;
        state.wake_rx();
    }
}

impl<T, const N: usize> Permit<'_, T, N> {
    /// Fills the slot. The receiver is woken; if it is gone, `task` is dropped with the pipe.
    pub fn send(mut self, task: T) {
        self.used = true;
        let mut state = lock(self.shared);
        state.reserved -= 1;
        if state.receiver_gone {
            return;
        }
        let tail = (state.head + state.queued) % N;
        state.slots[tail] = Some(task);
        state.queued += 1;
        state.wake_rx();
    }
}

impl<T, const N: usize> Drop for Permit<'_, T, N> {
    fn drop(&mut self) {
        if !self.used {
            let mut state = lock(self.shared);
            state.reserved -= 1;
            state.wake_tx();
        }
    }
}

impl<T, const N: usize> fmt::Debug for Permit<'_, T, N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl<T, const N: usize> Receiver<'_, T, N> {
    fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        let mut state = lock(self.0);
        if state.queued > 0 {
            let head = state.head;
            let task = state.slots[head].take();
            state.head = (head + 1) % N;
            state.queued -= 1;
            state.wake_tx();
            return Poll::Ready(task);
        }
        if state.sender_gone {
            return Poll::Ready(None);
        }
        remember(&mut state.rx_waker, cx);
        Poll::Pending
    }

    /// The next task; `None` once the sender is gone and every task sent was taken.
    pub async fn recv(&mut self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl<T, const N: usize> Drop for Receiver<'_, T, N> {
    fn drop(&mut self) {
        let mut state = lock(self.0);
        state.receiver_gone = true;
        // The tasks still queued go now (tokio's receiver drops them too).
        for slot in state.slots.iter_mut() {
            slot.take();
        }
        state.queued = 0;
        state.wake_tx();
    }
}

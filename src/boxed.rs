//! Boxing a future without copying it.
//!
//! `Box::pin(future)` (and `#[async_trait]`, which does that for every call) builds the whole
//! future on the stack, at its largest state's size, then copies it into the allocation. For
//! the futures on every request's path that copy showed in `perf` (0.8% of the gateway's
//! CPU for `request_filter`'s, when `ProxyHttp` was `#[async_trait]`; its filters are unboxed
//! since pingora-proxy patch 9). Allocating first and having `make` return the future straight
//! into the allocation lets the compiler build it there. Used for a gateway-made response's
//! write (`GatewayResponse::send`), kept out of the request's own future.

use std::future::Future;
use std::pin::Pin;

/// `make()`'s future, boxed where it is built.
#[inline(always)]
pub fn in_place<'a, F>(
    make: impl FnOnce() -> F,
) -> Pin<Box<dyn Future<Output = F::Output> + Send + 'a>>
where
    F: Future + Send + 'a,
{
    let slot = Box::new_uninit();
    let future = Box::write(slot, make());
    Box::into_pin(future)
}

//! Where a refresh runs, and how waits are timed, without ever panicking in the caller.
//!
//! A refresh runs on the runtime chosen when the layer was built (the one current then, or
//! the one given to [`RefreshLayer::runtime`](crate::client::RefreshLayer::runtime)), not on
//! whichever runtime the request that started it happens to run on: that one may go idle (a
//! `current_thread` runtime whose `block_on` returned) and leave every other waiter hanging.
//!
//! Tokio panics when a timer is made on a runtime without a time driver, or outside any
//! runtime. Both are set-up mistakes, so they are reported as [`Error::NoRuntime`] instead,
//! to the request that met them.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};

use tokio::runtime::Handle;
use tokio::time::{Instant, Timeout};

use crate::client::error::Error;

/// The runtime to spawn a refresh on: `runtime`, or else the current one.
pub(super) fn handle(runtime: Option<&Handle>) -> Result<Handle, Error> {
    runtime
        .cloned()
        .map_or_else(Handle::try_current, Ok)
        .map_err(|_| Error::NoRuntime)
}

/// `tokio::time::timeout_at(deadline, future)`, made on the current runtime, or on `runtime`
/// when the caller is outside any; [`Error::NoRuntime`] where that has no timers, or there is
/// neither.
pub(super) fn timeout_at<F: Future>(
    runtime: Option<&Handle>,
    deadline: Instant,
    future: F,
) -> Result<Timeout<F>, Error> {
    let _entered = match Handle::try_current() {
        Ok(_) => None,
        Err(_) => Some(runtime.ok_or(Error::NoRuntime)?.enter()),
    };
    // The panic (a runtime built without `enable_time`) happens before the timer exists, so
    // nothing is left half-made.
    catch_unwind(AssertUnwindSafe(move || {
        tokio::time::timeout_at(deadline, future)
    }))
    .map_err(|_| Error::NoRuntime)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn outside_any_runtime_the_chosen_one_times_the_wait() {
        let deadline = Instant::now() + Duration::from_millis(5);
        assert!(matches!(
            timeout_at(None, deadline, std::future::pending::<()>()),
            Err(Error::NoRuntime)
        ));
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_time()
            .build()
            .unwrap();
        let wait = timeout_at(
            Some(runtime.handle()),
            deadline,
            std::future::pending::<()>(),
        );
        // Polled from a thread of no runtime, it still ends: the chosen runtime drives it.
        assert!(futures_executor_block_on(wait.unwrap()).is_err());
    }

    #[test]
    fn a_runtime_without_timers_is_an_error_not_a_panic() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime.block_on(async {
            let deadline = Instant::now() + Duration::from_secs(1);
            assert!(matches!(
                timeout_at(None, deadline, async {}),
                Err(Error::NoRuntime)
            ));
        });
        assert!(handle(None).is_err());
        assert!(handle(Some(runtime.handle())).is_ok());
    }

    /// Polls `future` to completion on this thread, which belongs to no runtime.
    fn futures_executor_block_on<F: Future>(future: F) -> F::Output {
        let mut future = std::pin::pin!(future);
        let waker = std::task::Waker::from(std::sync::Arc::new(Unpark(std::thread::current())));
        let mut cx = std::task::Context::from_waker(&waker);
        loop {
            if let std::task::Poll::Ready(out) = future.as_mut().poll(&mut cx) {
                return out;
            }
            std::thread::park();
        }
    }

    struct Unpark(std::thread::Thread);

    impl std::task::Wake for Unpark {
        fn wake(self: std::sync::Arc<Self>) {
            self.0.unpark();
        }
    }
}

//! What every benchmark shares: a runtime, a no-op inner service, and a driver that keeps the
//! runtime out of the measurement.
#![allow(dead_code)] // each benchmark uses a part

use std::convert::Infallible;
use std::future::Future;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

/// The inner service contenders wrap: 200, empty body.
pub(crate) type Noop = tower::util::ServiceFn<
    fn(Request<Full<Bytes>>) -> std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>,
>;

pub(crate) fn noop() -> Noop {
    tower::service_fn(|_| std::future::ready(Ok(Response::new(Full::default()))))
}

pub(crate) fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Drives `future` to completion: one poll with a no-op waker (most futures here complete
/// synchronously), the runtime only if it does not. The caller has entered `rt`, so futures
/// that set timers can be polled.
pub(crate) fn complete<F: Future>(rt: &tokio::runtime::Runtime, future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => rt.block_on(future),
    }
}

//! What the middleware of every role shares: the inner-service accessors, and moving the
//! ready instance of a service into a future.

/// `get_ref`, `get_mut` and `into_inner` for a service that wraps `self.inner: S`, as
/// tower-http defines them.
macro_rules! define_inner_service_accessors {
    () => {
        /// The inner service.
        pub fn get_ref(&self) -> &S {
            &self.inner
        }

        /// The inner service, mutably.
        pub fn get_mut(&mut self) -> &mut S {
            &mut self.inner
        }

        /// Consumes `self`, returning the inner service.
        pub fn into_inner(self) -> S {
            self.inner
        }
    };
}
pub(crate) use define_inner_service_accessors;

/// Takes the ready instance out of `service`, leaving a fresh clone in its place, so that a
/// future which calls it later holds the one unit of capacity `poll_ready` reserved, never
/// two (tower's guidance for services that must call their inner service from a future).
pub(crate) fn take_ready<S: Clone>(service: &mut S) -> S {
    let clone = service.clone();
    std::mem::replace(service, clone)
}

//! [`Swap`]: a value that a reload replaces while readers keep the one they took.
//!
//! Readers take one `Arc` snapshot (a short read lock and a reference count) and use it
//! for as long as they need: a request keeps the clients and routes it started with, a
//! connection the TLS configuration it was accepted with. A reload stores a new `Arc`;
//! the old value lives on until its last reader drops it. README.md, "Operations".

use std::sync::{Arc, PoisonError, RwLock};

pub struct Swap<T>(RwLock<Arc<T>>);

impl<T> Swap<T> {
    pub fn new(value: T) -> Swap<T> {
        Swap::from_arc(Arc::new(value))
    }

    /// For a value the caller also keeps (or watches through a `Weak`).
    pub fn from_arc(value: Arc<T>) -> Swap<T> {
        Swap(RwLock::new(value))
    }

    /// The current value, kept by the caller for as long as it needs it.
    pub fn load(&self) -> Arc<T> {
        self.0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Replaces the value for every later [`Swap::load`].
    pub fn store(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = value;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_outlives_the_swap() {
        let swap = Swap::new(1);
        let before = swap.load();
        swap.store(Arc::new(2));
        assert_eq!((*before, *swap.load()), (1, 2));
    }
}

//! One payment per order in flight, key or no key: the official SDKs cannot set headers,
//! so this is what stops a double-clicked "Pay" in a browser storefront.
//!
//! Bounded by the requests in flight (each holds at most one order), so no cap is needed.

use std::collections::HashSet;
use std::sync::{Arc, Mutex, MutexGuard};

const SHARDS: usize = 16;

#[derive(Default)]
pub(crate) struct OrdersInFlight {
    shards: [Mutex<HashSet<uuid::Uuid>>; SHARDS],
}

/// Holds an order until dropped (when its payment's outcome is recorded).
pub(crate) struct OrderGuard {
    orders: Arc<OrdersInFlight>,
    order: uuid::Uuid,
}

impl OrdersInFlight {
    fn shard(&self, order: &uuid::Uuid) -> MutexGuard<'_, HashSet<uuid::Uuid>> {
        // Every update is one insert or remove: a poisoned lock still holds a valid set.
        self.shards[order.as_bytes()[15] as usize % SHARDS]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Marks `order` in flight, or `None` when a payment for it already is.
    pub(crate) fn enter(self: &Arc<Self>, order: uuid::Uuid) -> Option<OrderGuard> {
        self.shard(&order).insert(order).then(|| OrderGuard {
            orders: self.clone(),
            order,
        })
    }
}

impl Drop for OrderGuard {
    fn drop(&mut self) {
        self.orders.shard(&self.order).remove(&self.order);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_at_a_time_per_order() {
        let orders = Arc::new(OrdersInFlight::default());
        let a = uuid::Uuid::from_u128(1);
        let guard = orders.enter(a).expect("first");
        assert!(orders.enter(a).is_none());
        assert!(orders.enter(uuid::Uuid::from_u128(2)).is_some());
        drop(guard);
        assert!(orders.enter(a).is_some());
    }
}

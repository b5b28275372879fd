//! Each tenant's share of waiting Begins: a tenant that already has its
//! share waiting gets `in_progress` at once instead of a place among the
//! waiters, so one tenant's long waits cannot hold every in-flight slot.

/// How many Begins of each tenant are waiting.
#[derive(Default)]
pub struct WaitShares {
    // A std Mutex, not a tokio one: nothing awaits while it is held.
    by_tenant: std::sync::Mutex<std::collections::HashMap<String, usize>>,
}

/// One tenant's place among the waiters, given back on drop.
pub struct WaitSlot<'a> {
    shares: &'a WaitShares,
    tenant: String,
}

impl WaitShares {
    /// A place for one more waiter of `tenant`, unless it has `limit` already.
    pub fn take(&self, tenant: &str, limit: usize) -> Option<WaitSlot<'_>> {
        let mut by_tenant = self.by_tenant.lock().expect("wait shares lock poisoned");
        let waiting = by_tenant.entry(tenant.to_owned()).or_default();
        if *waiting >= limit {
            return None;
        }
        *waiting += 1;
        Some(WaitSlot { shares: self, tenant: tenant.to_owned() })
    }
}

impl Drop for WaitSlot<'_> {
    fn drop(&mut self) {
        let mut by_tenant = self.shares.by_tenant.lock().expect("wait shares lock poisoned");
        if let Some(waiting) = by_tenant.get_mut(&self.tenant) {
            *waiting -= 1;
            if *waiting == 0 {
                by_tenant.remove(&self.tenant);
            }
        }
    }
}

//! A bounded in-memory cache of values derived from stored documents (the API keeps each
//! object's rendered JSON here), keyed by a document's [`Stamp`].
//!
//! Why it can never serve stale data: an entry is returned only when the caller's stamp (read
//! from the database in the same request) has the same `version` and `created_at` as the
//! stamp the entry was derived from. Every write of a document goes through
//! [`crate::WriteTx::update`] or [`crate::WriteTx::put_resource`], which bump `version` in the
//! database, so a changed document never matches an old entry, also when another node (on
//! PostgreSQL) wrote it. A document deleted and inserted again under the same id starts at
//! version 1 again; `created_at` tells the two apart (it is the creation time of the new
//! object). Nothing is invalidated by writes in this process: validation on read is the only
//! rule, which is what makes it safe across nodes.
//!
//! Bounded by bytes (the caller states each value's size): when an insert takes it over the
//! bound, entries are dropped (in the hash map's arbitrary order) until a quarter of the room
//! is free again.

use std::any::Any;
use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Mutex;

use crate::document::Stamp;

/// Default bound of [`RenderCache`]: about 4,000 rendered load balancers.
pub const DEFAULT_CACHE_BYTES: usize = 4 << 20;

/// Fixed per-entry overhead counted on top of the value's own size (key, stamp, map slot).
const ENTRY_OVERHEAD: usize = 160;

/// The cache; see the module documentation. Cheap to share (`Arc` inside [`crate::Store`]).
pub struct RenderCache {
    max_bytes: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    /// kind → id → entry.
    kinds: HashMap<String, HashMap<String, Entry>>,
    bytes: usize,
}

struct Entry {
    version: i64,
    created_at: String,
    value: Arc<dyn Any + Send + Sync>,
    bytes: usize,
}

impl std::fmt::Debug for RenderCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut d = f.debug_struct("RenderCache");
        d.field("max_bytes", &self.max_bytes);
        if let Ok(inner) = self.inner.try_lock() {
            d.field("bytes", &inner.bytes);
        }
        d.finish()
    }
}

impl RenderCache {
    /// A cache holding at most about `max_bytes` (0 disables it).
    pub fn new(max_bytes: usize) -> RenderCache {
        RenderCache {
            max_bytes,
            inner: Mutex::new(Inner::default()),
        }
    }

    /// The cached values of `kind` for each stamp, in order: `None` where there is no entry,
    /// the entry is of another stamp (the document changed), or of another type.
    pub async fn get_many<T: Any + Send + Sync>(
        &self,
        kind: &str,
        stamps: &[Stamp],
    ) -> Vec<Option<Arc<T>>> {
        let inner = self.inner.lock().await;
        let Some(map) = inner.kinds.get(kind) else {
            return vec![None; stamps.len()];
        };
        stamps
            .iter()
            .map(|s| {
                let e = map.get(s.id.as_str())?;
                if e.version != s.version || e.created_at != s.created_at {
                    return None;
                }
                e.value.clone().downcast::<T>().ok()
            })
            .collect()
    }

    /// The cached value for one stamp (see [`RenderCache::get_many`]).
    pub async fn get<T: Any + Send + Sync>(&self, kind: &str, stamp: &Stamp) -> Option<Arc<T>> {
        self.get_many(kind, std::slice::from_ref(stamp))
            .await
            .pop()
            .flatten()
    }

    /// Stores `value` derived from the document version `stamp`; `bytes` is its approximate
    /// heap size. Replaces the entry of an older version. Values larger than an eighth of the
    /// bound are not kept.
    pub async fn put<T: Any + Send + Sync>(
        &self,
        kind: &str,
        stamp: &Stamp,
        value: Arc<T>,
        bytes: usize,
    ) {
        let bytes = bytes + ENTRY_OVERHEAD + stamp.id.len() + stamp.created_at.len();
        if bytes > self.max_bytes / 8 {
            return;
        }
        let mut inner = self.inner.lock().await;
        let entry = Entry {
            version: stamp.version,
            created_at: stamp.created_at.clone(),
            value,
            bytes,
        };
        let map = match inner.kinds.get_mut(kind) {
            Some(m) => m,
            None => inner.kinds.entry(kind.to_owned()).or_default(),
        };
        let old = map.insert(stamp.id.clone(), entry).map(|e| e.bytes);
        inner.bytes = inner.bytes + bytes - old.unwrap_or(0);
        if inner.bytes > self.max_bytes {
            inner.shrink(self.max_bytes / 4 * 3);
        }
    }

    /// Entries and counted bytes.
    pub async fn usage(&self) -> (usize, usize) {
        let inner = self.inner.lock().await;
        (inner.kinds.values().map(HashMap::len).sum(), inner.bytes)
    }
}

impl Inner {
    fn shrink(&mut self, target: usize) {
        for map in self.kinds.values_mut() {
            if self.bytes <= target {
                break;
            }
            let mut freed = 0;
            let bytes = self.bytes;
            map.retain(|_, e| {
                if bytes - freed > target {
                    freed += e.bytes;
                    false
                } else {
                    true
                }
            });
            self.bytes -= freed;
        }
        self.kinds.retain(|_, m| !m.is_empty());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(id: &str, version: i64) -> Stamp {
        Stamp {
            id: id.into(),
            created_at: "2026-01-01T00:00:00.000000Z".into(),
            version,
        }
    }

    #[tokio::test]
    async fn hit_only_on_the_same_stamp() {
        let c = RenderCache::new(1 << 20);
        c.put("loadbalancer", &stamp("a", 1), Arc::new("v1".to_owned()), 2)
            .await;
        assert_eq!(
            c.get::<String>("loadbalancer", &stamp("a", 1))
                .await
                .as_deref(),
            Some(&"v1".to_owned())
        );
        // Another version, another creation time, another kind, another type: misses.
        assert!(
            c.get::<String>("loadbalancer", &stamp("a", 2))
                .await
                .is_none()
        );
        let mut recreated = stamp("a", 1);
        recreated.created_at = "2026-01-01T00:00:01.000000Z".into();
        assert!(c.get::<String>("loadbalancer", &recreated).await.is_none());
        assert!(c.get::<String>("listener", &stamp("a", 1)).await.is_none());
        assert!(c.get::<u32>("loadbalancer", &stamp("a", 1)).await.is_none());
        // A newer version replaces the entry (the old one is no longer served).
        c.put("loadbalancer", &stamp("a", 2), Arc::new("v2".to_owned()), 2)
            .await;
        assert!(
            c.get::<String>("loadbalancer", &stamp("a", 1))
                .await
                .is_none()
        );
        assert_eq!(c.usage().await.0, 1);
    }

    #[tokio::test]
    async fn stays_within_its_bound() {
        let max = 64 << 10;
        let c = RenderCache::new(max);
        for i in 0..10_000 {
            c.put(
                "loadbalancer",
                &stamp(&format!("id-{i}"), 1),
                Arc::new(vec![0u8; 600]),
                600,
            )
            .await;
            assert!(c.usage().await.1 <= max, "over the bound after {i} inserts");
        }
        let (entries, _) = c.usage().await;
        assert!(entries > 0 && entries < 100, "{entries} entries");
        // Disabled cache keeps nothing.
        let off = RenderCache::new(0);
        off.put("loadbalancer", &stamp("a", 1), Arc::new(1u8), 1)
            .await;
        assert_eq!(off.usage().await, (0, 0));
    }
}

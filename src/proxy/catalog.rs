//! The upstream databases' user-defined objects (see
//! [`crate::classify::objects`]), read with the session's own upstream
//! login when it starts and shared for a moment: a storm of new
//! connections reads each database's catalog about once a second, not once
//! each. The query plans in milliseconds, which a login should not pay.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::classify::objects::{self, UserObjects};
use crate::upstream::{Upstream, UpstreamError};

/// How long one reading serves later sessions of the same database and login.
const FRESH: Duration = Duration::from_secs(1);
/// Distinct (database, login) pairs kept; past this the cache starts over.
const MAX_ENTRIES: usize = 1024;

/// Readings by (database, login), with when they were taken.
type Readings = HashMap<(String, String), (Instant, Arc<UserObjects>)>;

#[derive(Default)]
pub struct Catalogs {
    read: Mutex<Readings>,
}

impl Catalogs {
    /// The user objects of `database` as `login` sees them, from a reading
    /// under a second old or read now on `upstream`.
    pub async fn objects(
        &self,
        upstream: &mut Upstream,
        database: &str,
        login: &str,
    ) -> Result<Arc<UserObjects>, UpstreamError> {
        let key = (database.to_owned(), login.to_owned());
        if let Some((at, o)) = self.lock().get(&key)
            && at.elapsed() < FRESH
        {
            return Ok(o.clone());
        }
        let rows = upstream.simple_query(objects::QUERY).await?;
        let o = Arc::new(UserObjects::from_rows(rows.iter().filter_map(|r| {
            match (r.first(), r.get(1), r.get(2)) {
                (Some(Some(k)), Some(Some(n)), Some(Some(x))) => {
                    Some((k.as_str(), n.as_str(), x.as_str()))
                }
                _ => None,
            }
        })));
        let mut read = self.lock();
        if read.len() >= MAX_ENTRIES {
            read.clear();
        }
        read.insert(key, (Instant::now(), o.clone()));
        Ok(o)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Readings> {
        self.read.lock().unwrap_or_else(|p| p.into_inner())
    }
}

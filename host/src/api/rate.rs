//! A rate per caller on the admin routes and on ingest: a token bucket for each token (or the
//! Segment write key) and each kind of route, refilled continuously. Past its burst a caller
//! gets `429 rate_limited` with `Retry-After`, and every other caller is unaffected.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use axum::http::StatusCode;
use axum::http::header::RETRY_AFTER;
use axum::response::{IntoResponse, Response};

use super::ApiError;
use crate::auth::Permission;

/// How fast one caller may call one kind of route.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Requests per second, sustained.
    pub per_second: f64,
    /// Requests at once after a quiet spell.
    pub burst: f64,
}

/// The kinds of route that are rate limited.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    Admin,
    Ingest,
}

impl Class {
    /// The class of a route needing `permission`, if it is limited.
    pub fn of(permission: Permission) -> Option<Class> {
        match permission {
            Permission::Admin => Some(Class::Admin),
            Permission::Ingest | Permission::WriteContacts => Some(Class::Ingest),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Class::Admin => "admin",
            Class::Ingest => "ingest",
        }
    }
}

/// Most callers remembered; past it, buckets full again are forgotten first.
const MAX_CALLERS: usize = 20_000;

struct Bucket {
    tokens: f64,
    at: Instant,
    /// The rate it was last taken at: its class's, so forgetting full buckets refills each
    /// at its own.
    rate: Rate,
}

/// Every caller's buckets.
#[derive(Default)]
pub struct Buckets {
    buckets: Mutex<HashMap<(Class, String), Bucket>>,
}

impl Buckets {
    /// Take one request from `caller`'s bucket for `class`, or refuse it.
    pub fn take(&self, class: Class, caller: &str, rate: Rate) -> Result<(), Limited> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        if buckets.len() >= MAX_CALLERS {
            buckets.retain(|_, bucket| {
                refill(bucket, now);
                bucket.tokens < bucket.rate.burst
            });
        }
        let bucket = buckets.entry((class, caller.to_owned())).or_insert(Bucket {
            tokens: rate.burst,
            at: now,
            rate,
        });
        bucket.rate = rate;
        refill(bucket, now);
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            return Ok(());
        }
        let wait = if rate.per_second > 0.0 {
            ((1.0 - bucket.tokens) / rate.per_second).ceil().max(1.0)
        } else {
            3600.0
        };
        Err(Limited {
            class,
            rate,
            wait_s: wait as u64,
        })
    }
}

/// A request refused for its caller's rate; answered `429 rate_limited` with `Retry-After`.
#[derive(Debug)]
pub struct Limited {
    class: Class,
    rate: Rate,
    wait_s: u64,
}

impl IntoResponse for Limited {
    fn into_response(self) -> Response {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "this token sends {} requests faster than {} a second (bursts of {}); try again in {} s",
                self.class.as_str(),
                self.rate.per_second,
                self.rate.burst,
                self.wait_s
            ),
        )
        .into_response();
        let seconds = self.wait_s.to_string();
        response.headers_mut().insert(
            RETRY_AFTER,
            seconds.parse().expect("digits are a header value"),
        );
        response
    }
}

fn refill(bucket: &mut Bucket, now: Instant) {
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * bucket.rate.per_second).min(bucket.rate.burst);
    bucket.at = now;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Forgetting full buckets, when many callers are remembered, refills each at its own
    /// class's rate: a token that used up its slow admin rate stays refused however fast
    /// the ingest rate of the request that triggered the clean-up.
    #[test]
    fn a_clean_up_keeps_each_bucket_at_its_own_rate() {
        let buckets = Buckets::default();
        let slow = Rate {
            per_second: 0.001,
            burst: 3.0,
        };
        let fast = Rate {
            per_second: 1_000_000.0,
            burst: 10.0,
        };
        for _ in 0..3 {
            assert!(buckets.take(Class::Admin, "tok_a", slow).is_ok());
        }
        for n in 0..MAX_CALLERS {
            let _ = buckets.take(Class::Ingest, &format!("tok_{n}"), fast);
        }
        assert!(buckets.take(Class::Admin, "tok_a", slow).is_err());
    }
}

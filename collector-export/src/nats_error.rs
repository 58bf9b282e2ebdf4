//! NATS client errors in this crate's error chains, each cause printed once.
//!
//! `async_nats`'s errors display as `kind: source` *and* return that source from
//! `Error::source`, so a chain printed with [`collector_core::Report`] (or anyhow's
//! `{:#}`) would show their cause twice. [`NatsError`] keeps the client's error but
//! displays only its kind, leaving the cause to the chain.

use std::fmt;

/// What `async_nats` asks of an error kind.
pub trait NatsErrorKind: Clone + fmt::Debug + fmt::Display + PartialEq {}

impl<K: Clone + fmt::Debug + fmt::Display + PartialEq> NatsErrorKind for K {}

/// An `async_nats` error whose Display is its kind alone; the cause is its `source`.
pub struct NatsError<K: NatsErrorKind>(pub async_nats::error::Error<K>);

impl<K> NatsError<K>
where
    K: NatsErrorKind,
{
    /// What kind of failure the client reported.
    pub fn kind(&self) -> K {
        self.0.kind()
    }
}

impl<K: NatsErrorKind> From<async_nats::error::Error<K>> for NatsError<K> {
    fn from(error: async_nats::error::Error<K>) -> Self {
        Self(error)
    }
}

impl<K> fmt::Debug for NatsError<K>
where
    K: NatsErrorKind,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl<K> fmt::Display for NatsError<K>
where
    K: NatsErrorKind,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0.kind(), f)
    }
}

impl<K> std::error::Error for NatsError<K>
where
    K: NatsErrorKind,
{
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        std::error::Error::source(&self.0)
    }
}

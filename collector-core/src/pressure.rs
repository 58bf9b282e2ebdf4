//! Reading and reacting to backpressure from a source's side of the pipeline.
//!
//! A source gets a plain bounded `mpsc::Sender`. Its fill ratio rises when the pipeline
//! behind it stalls (the collector's forwarder stops draining while the shared queue is
//! full), so it is the pressure signal a kernel drain loop can poll without blocking:
//!
//! ```
//! use collector_core::pressure::{pressure, BackpressurePolicy};
//! # let (tx, _rx) = tokio::sync::mpsc::channel::<collector_core::CollectionEvent>(10);
//! let policy = BackpressurePolicy::from(&collector_core::CollectorConfig::default());
//! if policy.is_pressured(&tx) {
//!     // Shed: count the loss in the source's own `stats().dropped["backpressure"]`.
//! }
//! assert_eq!(pressure(&tx), 0.0);
//! ```

use std::time::Duration;

use tokio::sync::mpsc;

use crate::config::CollectorConfig;

/// Fill ratio of the channel behind `tx`, from 0.0 (empty) to 1.0 (full). Never blocks.
pub fn pressure<T>(tx: &mpsc::Sender<T>) -> f64 {
    let max = tx.max_capacity();
    if max == 0 {
        return 0.0;
    }
    let used = max.saturating_sub(tx.capacity());
    used as f64 / max as f64
}

/// The collector's backpressure rule, for sources that want to apply it to their own
/// sends: above `threshold` the channel is pressured, and a send that finds it full waits
/// at most `max_wait` before giving the event back.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackpressurePolicy {
    /// Fill ratio above which the channel counts as pressured.
    pub threshold: f64,
    /// Longest a send waits for room.
    pub max_wait: Duration,
}

impl From<&CollectorConfig> for BackpressurePolicy {
    fn from(config: &CollectorConfig) -> Self {
        Self {
            threshold: config.backpressure_threshold,
            max_wait: config.max_backpressure_wait,
        }
    }
}

/// What [`BackpressurePolicy::send`] did with an event.
#[derive(Debug)]
pub enum SendOutcome<T> {
    /// The event is in the channel.
    Sent,
    /// The channel stayed full for `max_wait`; the event is handed back to be counted
    /// as dropped with reason `backpressure`.
    Dropped(T),
    /// The collector is gone; stop producing.
    Closed(T),
}

impl BackpressurePolicy {
    /// Whether the channel is above the threshold, i.e. the source should shed load.
    pub fn is_pressured<T>(&self, tx: &mpsc::Sender<T>) -> bool {
        pressure(tx) > self.threshold
    }

    /// Sends `event`, waiting at most `max_wait` for room.
    pub async fn send<T>(&self, tx: &mpsc::Sender<T>, event: T) -> SendOutcome<T> {
        let event = match tx.try_send(event) {
            Ok(()) => return SendOutcome::Sent,
            Err(mpsc::error::TrySendError::Closed(event)) => return SendOutcome::Closed(event),
            Err(mpsc::error::TrySendError::Full(event)) => event,
        };
        match tokio::time::timeout(self.max_wait, tx.reserve()).await {
            Ok(Ok(permit)) => {
                permit.send(event);
                SendOutcome::Sent
            }
            Ok(Err(_closed)) => SendOutcome::Closed(event),
            Err(_elapsed) => SendOutcome::Dropped(event),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn pressure_tracks_fill_and_send_waits_at_most_max_wait() {
        let (tx, mut rx) = mpsc::channel::<u32>(10);
        let policy = BackpressurePolicy {
            threshold: 0.8,
            max_wait: Duration::from_millis(500),
        };
        for i in 0..8 {
            tx.try_send(i).unwrap();
        }
        assert!((pressure(&tx) - 0.8).abs() < 1e-9);
        assert!(!policy.is_pressured(&tx));
        tx.try_send(8).unwrap();
        assert!(policy.is_pressured(&tx));
        assert!(matches!(policy.send(&tx, 9).await, SendOutcome::Sent));
        assert_eq!(pressure(&tx), 1.0);

        let started = tokio::time::Instant::now();
        assert!(matches!(
            policy.send(&tx, 10).await,
            SendOutcome::Dropped(10)
        ));
        assert_eq!(started.elapsed(), Duration::from_millis(500));

        rx.recv().await.unwrap();
        assert!(matches!(policy.send(&tx, 11).await, SendOutcome::Sent));
        drop(rx);
        assert!(matches!(
            policy.send(&tx, 12).await,
            SendOutcome::Closed(12)
        ));
    }
}

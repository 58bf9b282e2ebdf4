//! IPC between the collector and agents (being written).

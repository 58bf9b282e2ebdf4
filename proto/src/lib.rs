//! IPC schema (filled in by the IPC work).

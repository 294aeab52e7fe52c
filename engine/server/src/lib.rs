//! The control plane daemon (in progress).

//! Embedded DNS (skeleton).

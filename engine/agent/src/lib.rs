//! Node agent (skeleton).

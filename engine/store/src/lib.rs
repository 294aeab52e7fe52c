//! SQLite stores (skeleton).

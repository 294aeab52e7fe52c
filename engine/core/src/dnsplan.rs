//! DNS record plans.
//!
//! STUB: replaced by the dnsplan implementation.

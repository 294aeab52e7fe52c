//! `terraform-provider-neutral`: neutral's Terraform provider.
//!
//! Terraform talks plugin protocol 6 to [`plugin`] (the only module that
//! knows the plugin library); everything else works in the provider's own
//! terms ([`framework`]). The resources [`gtm`] and [`pool`] and the data
//! sources in [`data`] read the control plane and DNS backends through
//! [`client`] and [`backend`], the node pool's local agents run through
//! [`launcher`] (in containers through [`docker_launcher`]), and every computation — effective weights, weight scaling,
//! record diffs, slot plans — is a call into `neutral-core`.

pub mod backend;
pub mod client;
pub mod config;
pub mod context;
pub mod data;
pub mod docker_launcher;
pub mod framework;
pub mod gtm;
pub mod launcher;
pub mod live;
pub mod plugin;
pub mod pool;
pub mod provider;
pub mod records;
pub mod secret;
pub mod slot;
pub mod timing;

/// The provider's name in Terraform (`neutral_gtm_record`, …).
pub const PROVIDER_NAME: &str = "neutral";

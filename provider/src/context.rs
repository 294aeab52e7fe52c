//! What the resources and data sources share at run time: the clients a
//! configured provider talks through ([`Clients`]), the handle they find
//! them in ([`Configured`]), and the clock ([`now`]). It must not import the
//! resources, the data sources or the provider's registry (`provider`).

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use neutral_core::model::Timestamp;

use crate::backend::alidns::AliDns;
use crate::backend::cloudflare::Cloudflare;
use crate::backend::route53::Route53;
use crate::client::{ControlPlane, PowerDns};
use crate::framework::{Diags, Path};

/// The clients a configured provider talks through.
#[derive(Debug)]
pub struct Clients {
    pub control_plane: ControlPlane,
    /// Whether an admin token was given (the zone API needs it).
    pub has_token: bool,
    pub powerdns: Option<PowerDns>,
    pub route53: Option<Route53>,
    pub cloudflare: Option<Cloudflare>,
    pub alidns: Option<AliDns>,
}

/// The provider's clients, once Terraform has configured it.
#[derive(Clone, Debug, Default)]
pub struct Configured(Arc<RwLock<Option<Arc<Clients>>>>);

impl Configured {
    pub fn set(&self, clients: Clients) {
        let mut slot = self
            .0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        *slot = Some(Arc::new(clients));
    }

    /// The clients, or an error when the provider was not configured.
    pub fn get(&self, diags: &mut Diags) -> Option<Arc<Clients>> {
        let slot = self
            .0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let clients = slot.clone();
        if clients.is_none() {
            diags.error(
                Path::root(),
                "the neutral provider is not configured",
                "Terraform did not configure the provider before using it.",
            );
        }
        clients
    }
}

/// Now, for the core's computations.
pub fn now() -> Timestamp {
    let since = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default();
    Timestamp(i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
}

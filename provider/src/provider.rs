//! The provider itself: its configuration block, the clients it builds from
//! it, and the resources and data sources it offers.
//!
//! Resources are created before Terraform configures the provider, so they
//! share a [`Configured`] handle that `configure` fills in.

use std::sync::{Arc, RwLock};
use std::time::SystemTime;

use async_trait::async_trait;
use neutral_core::model::Timestamp;

use crate::backend::alidns::AliDns;
use crate::backend::cloudflare::Cloudflare;
use crate::backend::route53::Route53;
use crate::client::{ControlPlane, PowerDns};
use crate::config;
use crate::data::{DomainData, RegionData};
use crate::framework::{Block, DataSourceImpl, Diags, Path, ProviderImpl, ResourceImpl, Value};
use crate::gtm::GtmRecord;
use crate::pool::NodePool;

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

#[derive(Debug, Default)]
pub struct NeutralProvider {
    configured: Configured,
}

impl NeutralProvider {
    pub fn new() -> NeutralProvider {
        NeutralProvider::default()
    }
}

#[async_trait]
impl ProviderImpl for NeutralProvider {
    fn schema(&self) -> Block {
        config::schema()
    }

    fn validate(&self, config: &Value, diags: &mut Diags) {
        config::validate(config, diags);
    }

    async fn configure(&self, config: &Value, diags: &mut Diags) {
        let env = |name: &str| std::env::var(name).ok();
        let Some(settings) = config::parse(config, &env, diags) else {
            return;
        };
        let has_token = settings.token.is_some();
        let control_plane = match ControlPlane::new(&settings.endpoint, settings.token) {
            Ok(client) => client.pinned_to(env(config::ENV_HEALTH_VIEW).filter(|v| !v.is_empty())),
            Err(err) => {
                diags.error(
                    Path::attr("endpoint"),
                    "cannot set up the control plane client",
                    err.to_string(),
                );
                return;
            }
        };
        let powerdns = match settings.powerdns {
            None => None,
            Some(pdns) => match PowerDns::new(&pdns.url, pdns.api_key, &pdns.server_id) {
                Ok(client) => Some(client),
                Err(err) => {
                    diags.error(
                        Path::attr("powerdns"),
                        "cannot set up the PowerDNS client",
                        err.to_string(),
                    );
                    return;
                }
            },
        };
        let cloud = (
            settings.route53.map(Route53::new).transpose(),
            settings.cloudflare.map(Cloudflare::new).transpose(),
            settings.alidns.map(AliDns::new).transpose(),
        );
        let (route53, cloudflare, alidns) = match cloud {
            (Ok(route53), Ok(cloudflare), Ok(alidns)) => (route53, cloudflare, alidns),
            (Err(err), _, _) | (_, Err(err), _) | (_, _, Err(err)) => {
                diags.error(
                    Path::root(),
                    "cannot set up a DNS backend client",
                    err.to_string(),
                );
                return;
            }
        };
        tracing::info!(
            endpoint = %settings.endpoint,
            token = has_token,
            powerdns = powerdns.is_some(),
            route53 = route53.is_some(),
            cloudflare = cloudflare.is_some(),
            alidns = alidns.is_some(),
            "configured"
        );
        self.configured.set(Clients {
            control_plane,
            has_token,
            powerdns,
            route53,
            cloudflare,
            alidns,
        });
    }

    fn resources(&self) -> Vec<(&'static str, Arc<dyn ResourceImpl>)> {
        vec![
            (
                "gtm_record",
                Arc::new(GtmRecord::new(self.configured.clone())),
            ),
            (
                "node_pool",
                Arc::new(NodePool::new(self.configured.clone())),
            ),
        ]
    }

    fn data_sources(&self) -> Vec<(&'static str, Arc<dyn DataSourceImpl>)> {
        vec![
            ("region", Arc::new(RegionData::new(self.configured.clone()))),
            ("domain", Arc::new(DomainData::new(self.configured.clone()))),
        ]
    }
}

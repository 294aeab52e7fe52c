//! The provider itself: its configuration block, the clients it builds from
//! it, and the registry of the resources and data sources it offers.
//!
//! Resources are created before Terraform configures the provider, so they
//! share a [`Configured`] handle (in [`crate::context`]) that `configure`
//! fills in. Nothing imports this module but the plugin server.

use std::sync::Arc;

use async_trait::async_trait;

use crate::backend::alidns::AliDns;
use crate::backend::cloudflare::Cloudflare;
use crate::backend::route53::Route53;
use crate::client::{ControlPlane, PowerDns};
use crate::config;
use crate::context::{Clients, Configured};
use crate::data::{DomainData, RegionData};
use crate::framework::{Block, DataSourceImpl, Diags, Path, ProviderImpl, ResourceImpl, Value};
use crate::gtm::GtmRecord;
use crate::pool::NodePool;

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

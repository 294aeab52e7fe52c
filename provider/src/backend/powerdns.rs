//! PowerDNS Authoritative as a backend, through its HTTP API: one
//! all-or-nothing `PATCH` of the rrsets that change. The zone must exist
//! (zones are the DNS operator's). Record shapes — a plain rrset or a `LUA`
//! `pickwrandom` record — and the ownership comment are
//! [`crate::records`]'.

use async_trait::async_trait;
use neutral_core::backend_calls::Call;
use neutral_core::dnsplan::{DnsPlan, RecordSet};
use neutral_core::model::DnsBackendKind;

use super::{Applied, BackendError, DnsBackend, Listing, Target};
use crate::client::PowerDns;
use crate::records::{OWNER, fqdn};

#[derive(Clone, Debug)]
pub struct PowerDnsBackend {
    api: PowerDns,
}

impl PowerDnsBackend {
    pub fn new(api: PowerDns) -> PowerDnsBackend {
        PowerDnsBackend { api }
    }
}

#[async_trait]
impl DnsBackend for PowerDnsBackend {
    fn kind(&self) -> DnsBackendKind {
        DnsBackendKind::Powerdns
    }

    fn owner(&self) -> &str {
        OWNER
    }

    async fn list(&self, target: &Target<'_>) -> Result<Option<Listing>, BackendError> {
        let zone = super::counted(
            self.kind(),
            Call::Read,
            self.api.zone(&fqdn(target.zone)).await,
        )?;
        Ok(zone.map(|zone| super::zone_listing(self.kind(), zone, target)))
    }

    async fn create_zone(&self, zone: &str) -> Result<(), String> {
        Err(format!(
            "zone {} does not exist in PowerDNS; create it first \
             (for example `pdnsutil create-zone {zone}`): Terraform manages records, \
             the DNS operator manages zones",
            fqdn(zone)
        ))
    }

    async fn apply(
        &self,
        target: &Target<'_>,
        listing: &Listing,
        plan: &DnsPlan,
        desired: &[RecordSet],
    ) -> Result<Applied, BackendError> {
        let changes = super::zone_changes(listing, target, plan, desired);
        let name = fqdn(target.zone);
        super::patch_zone(self.kind(), target.zone, &changes, || {
            self.api.patch_zone(&name, &changes)
        })
        .await
    }
}

//! The control plane's embedded DNS server as a backend: its zone API
//! (`/dns/zones/{zone}`, admin token), PowerDNS' JSON shape. A missing zone
//! is created with one name server, `ns1.<zone>.`; records carry neutral's
//! `weight` extension and the ownership comment ([`crate::records`]).

use async_trait::async_trait;
use neutral_core::backend_calls::Call;
use neutral_core::dnsplan::{DnsPlan, RecordSet};
use neutral_core::model::DnsBackendKind;

use super::{Applied, BackendError, DnsBackend, Listing, Target};
use crate::client::ControlPlane;
use crate::records::{OWNER, fqdn};

#[derive(Clone, Debug)]
pub struct Embedded {
    control_plane: ControlPlane,
}

impl Embedded {
    pub fn new(control_plane: ControlPlane) -> Embedded {
        Embedded { control_plane }
    }
}

#[async_trait]
impl DnsBackend for Embedded {
    fn kind(&self) -> DnsBackendKind {
        DnsBackendKind::Embedded
    }

    fn owner(&self) -> &str {
        OWNER
    }

    async fn list(&self, target: &Target<'_>) -> Result<Option<Listing>, BackendError> {
        let zone = super::counted(
            self.kind(),
            Call::Read,
            self.control_plane.zone(&fqdn(target.zone)).await,
        )?;
        Ok(zone.map(|zone| super::zone_listing(self.kind(), zone, target)))
    }

    async fn create_zone(&self, zone: &str) -> Result<(), String> {
        let name = fqdn(zone);
        let nameservers = [format!("ns1.{name}")];
        match self.control_plane.create_zone(&name, &nameservers).await {
            // Someone else created it meanwhile: fine.
            Ok(()) => Ok(()),
            Err(err) if err.status() == Some(409) => Ok(()),
            Err(err) => Err(format!("cannot create zone {name}: {err}")),
        }
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
            self.control_plane.patch_zone(&name, &changes)
        })
        .await
    }
}

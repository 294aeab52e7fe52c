//! The DNS backends a record can live in, behind one small interface: read a
//! zone, make sure it exists, `PATCH` rrsets.
//!
//! - `embedded`: the control plane's zone API (`/dns/zones/{zone}`, admin
//!   token); a missing zone is created with one name server, `ns1.<zone>.`.
//! - `powerdns`: PowerDNS' HTTP API; the zone must exist (zones are the DNS
//!   operator's, not Terraform's).

use neutral_core::model::DnsBackendKind;

use crate::client::{ClientError, ControlPlane, PowerDns, RrSetChange, Zone};
use crate::records::fqdn;

#[derive(Clone, Debug)]
pub enum Backend {
    Embedded(ControlPlane),
    PowerDns(PowerDns),
}

impl Backend {
    pub fn kind(&self) -> DnsBackendKind {
        match self {
            Backend::Embedded(_) => DnsBackendKind::Embedded,
            Backend::PowerDns(_) => DnsBackendKind::Powerdns,
        }
    }

    /// `None` when the zone does not exist.
    pub async fn zone(&self, zone: &str) -> Result<Option<Zone>, ClientError> {
        let name = fqdn(zone);
        match self {
            Backend::Embedded(cp) => cp.zone(&name).await,
            Backend::PowerDns(pdns) => pdns.zone(&name).await,
        }
    }

    /// The zone, created first when the backend allows it.
    pub async fn ensure_zone(&self, zone: &str) -> Result<Zone, String> {
        let name = fqdn(zone);
        if let Some(found) = self.zone(zone).await.map_err(|e| e.to_string())? {
            return Ok(found);
        }
        match self {
            Backend::Embedded(cp) => {
                let nameservers = [format!("ns1.{name}")];
                match cp.create_zone(&name, &nameservers).await {
                    // Someone else created it meanwhile: fine.
                    Ok(()) => {}
                    Err(err) if err.status() == Some(409) => {}
                    Err(err) => return Err(format!("cannot create zone {name}: {err}")),
                }
                // A new zone holds only its SOA and NS rrsets, which no
                // record of ours touches.
                Ok(Zone {
                    name,
                    rrsets: Vec::new(),
                })
            }
            Backend::PowerDns(_) => Err(format!(
                "zone {name} does not exist in PowerDNS; create it first \
                 (for example `pdnsutil create-zone {zone}`): Terraform manages records, \
                 the DNS operator manages zones"
            )),
        }
    }

    pub async fn patch(&self, zone: &str, changes: &[RrSetChange]) -> Result<(), ClientError> {
        if changes.is_empty() {
            return Ok(());
        }
        let name = fqdn(zone);
        match self {
            Backend::Embedded(cp) => cp.patch_zone(&name, changes).await,
            Backend::PowerDns(pdns) => pdns.patch_zone(&name, changes).await,
        }
    }
}

//! The DNS backends a record can live in, behind one small interface: read a
//! zone, make sure it exists, `PATCH` rrsets.
//!
//! - `embedded`: the control plane's zone API (`/dns/zones/{zone}`, admin
//!   token); a missing zone is created with one name server, `ns1.<zone>.`.
//! - `powerdns`: PowerDNS' HTTP API; the zone must exist (zones are the DNS
//!   operator's, not Terraform's).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

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

    /// Applies `changes` to `zone`. Terraform applies up to ten records at
    /// once; PATCHes of one zone are serialized within the provider (PowerDNS'
    /// SQLite backend fails concurrent writers with a 500), and a 5xx is
    /// retried twice after a short pause.
    pub async fn patch(&self, zone: &str, changes: &[RrSetChange]) -> Result<(), ClientError> {
        if changes.is_empty() {
            return Ok(());
        }
        let name = fqdn(zone);
        let lock = zone_lock(self.kind(), &name);
        let _held = lock.lock().await;
        let mut attempt = 0;
        loop {
            let result = match self {
                Backend::Embedded(cp) => cp.patch_zone(&name, changes).await,
                Backend::PowerDns(pdns) => pdns.patch_zone(&name, changes).await,
            };
            match result {
                Err(err) if attempt < 2 && err.status().is_some_and(|s| s >= 500) => {
                    attempt += 1;
                    tracing::warn!(zone = %name, attempt, "zone PATCH failed; retrying: {err}");
                    tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                }
                other => return other,
            }
        }
    }
}

type ZoneLocks = Mutex<HashMap<(DnsBackendKind, String), Arc<tokio::sync::Mutex<()>>>>;

/// One async lock per backend and zone, for the life of the process.
fn zone_lock(kind: DnsBackendKind, zone: &str) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<ZoneLocks> = OnceLock::new();
    let mut locks = LOCKS
        .get_or_init(Mutex::default)
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Arc::clone(locks.entry((kind, zone.to_owned())).or_default())
}

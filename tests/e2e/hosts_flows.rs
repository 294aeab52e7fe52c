//! DESIGN.md's five flows across hosts of the multi-host test bed
//! (`neutral_e2e::flows` on `neutral_e2e::stack` with `hosts`): `neutral
//! serve --run-terraform` on its own host, PowerDNS on another, and every
//! node a host of its region's network that Terraform creates and destroys
//! through the provider's `docker` launcher. A node's machine dies by
//! `docker kill` in one self-heal run and by `docker pause` (silent: no
//! reset) in the other; a region fails by being cut off from the control
//! plane's host, not by a push.
//!
//! Skipped without Docker or Terraform; failed without them when `CI` is
//! set.

use neutral_e2e::flows;
use neutral_e2e::stack::Death;

#[test]
fn flow_1_bootstrap_across_hosts() {
    flows::bootstrap(71, Some(Death::Kill));
}

#[test]
fn flow_2_scale_out_across_hosts() {
    flows::scale_out(72, Some(Death::Kill));
}

#[test]
fn flow_3_scale_in_across_hosts() {
    flows::scale_in(73, Some(Death::Kill));
}

#[test]
fn flow_4_a_killed_host_is_replaced_across_hosts() {
    flows::self_heal(74, Some(Death::Kill));
}

#[test]
fn flow_4_a_frozen_host_is_replaced_across_hosts() {
    flows::self_heal(75, Some(Death::Freeze));
}

#[test]
fn flow_5_a_region_cut_off_fails_over_and_comes_back() {
    flows::region_failover(76, Some(Death::Kill));
}

//! DESIGN.md's five flows on loopback (`neutral_e2e::flows`): `neutral
//! serve` with real Terraform, whose provider's local launcher starts the
//! agents as processes of this machine, each on an address of the flow's
//! own loopback /24; a node dies by SIGKILL, a region fails by a push of
//! `state: down`.

use neutral_e2e::flows;

#[test]
fn flow_1_bootstrap_terraform_creates_the_first_node_and_dns_answers_with_it() {
    flows::bootstrap(61, None);
}

#[test]
fn flow_2_scale_out_commits_applies_and_the_new_node_joins_dns() {
    flows::scale_out(62, None);
}

#[test]
fn flow_3_scale_in_drains_first_then_terraform_removes_exactly_that_node() {
    flows::scale_in(63, None);
}

#[test]
fn flow_4_a_dead_node_leaves_dns_at_once_and_is_replaced_through_terraform() {
    flows::self_heal(64, None);
}

#[test]
fn flow_5_a_region_down_fails_over_with_capacity_and_comes_back() {
    flows::region_failover(65, None);
}

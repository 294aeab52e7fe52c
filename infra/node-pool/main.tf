# The node-pool root: one region's node pool per run, with one state per
# region. The scheduler in `neutral serve` (or CI) runs it as
#   terraform plan -var-file=<region>.tfvars
# keeping a separate state file per region. <region>.tfvars holds `region`
# and `desired_nodes`; people and the autoscaler edit it.
#
# Provider settings come from the environment: NEUTRAL_ENDPOINT and
# NEUTRAL_TOKEN (the control plane and its admin token). Local nodes also
# need the join token: env NEUTRAL_JOIN_TOKEN (read by the provider when it
# starts agents; it stays out of the state) or TF_VAR_join_token.

terraform {
  required_version = ">= 1.5"
  required_providers {
    neutral = {
      source = "neutral/neutral"
    }
  }
}

provider "neutral" {}

module "region" {
  source          = "../../modules/region"
  platform_config = "${path.root}/../../platform-config"

  region        = var.region
  desired_nodes = var.desired_nodes
  launcher      = var.launcher
  drain_grace   = var.drain_grace

  # Used by the local and docker launchers only (they start the agents).
  control_plane  = lookup(var.control_planes, var.region, null)
  join_token     = var.join_token
  address_range  = lookup(var.address_ranges, var.region, null)
  state_dir      = var.state_root == null ? null : "${var.state_root}/${var.region}"
  agent_args     = var.agent_args
  neutral_binary = var.neutral_binary

  # Used by the docker launcher only (TF_VAR_launcher=docker): the
  # operator's settings, which `neutral serve` also locks (a pushed change
  # to them is refused).
  docker_image    = var.docker_image
  docker_network  = var.docker_network
  docker_args     = var.docker_args
  docker_binaries = var.docker_binaries
}

# An external region's machines come from the cloud's own resources, one per
# slot, for example:
#   resource "aws_instance" "node" {
#     for_each = toset(module.region.slots)
#     tags     = { Name = each.key }   # the agent registers with --hostname <slot>
#   }

# Only the slots: live values (node status, ready count) in a root output
# would make every refresh a change and every drift check report drift.
output "slots" {
  description = "The region's slot keys."
  value       = module.region.slots
}

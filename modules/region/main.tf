# One region's node pool. With platform_config, the bounds and the launcher
# come from Git (platform-config/regions/<region>.yaml), so the YAML stays
# the single source; the variables override them.

locals {
  declared = try(yamldecode(file("${var.platform_config}/regions/${var.region}.yaml")), {})

  min_nodes = var.min_nodes != null ? var.min_nodes : try(local.declared.min_nodes, null)
  max_nodes = var.max_nodes != null ? var.max_nodes : try(local.declared.max_nodes, null)
  launcher = coalesce(
    var.launcher,
    try(local.declared.provider, "") == "local" ? "local" : "external",
  )
  # The local and docker launchers both start a `neutral agent` per slot.
  is_local  = contains(["local", "docker"], local.launcher)
  is_docker = local.launcher == "docker"
}

resource "neutral_node_pool" "this" {
  region        = var.region
  min_nodes     = local.min_nodes
  max_nodes     = local.max_nodes
  desired_nodes = var.desired_nodes
  launcher      = local.launcher
  drain_grace   = var.drain_grace

  control_plane  = local.is_local ? var.control_plane : null
  join_token     = local.is_local ? var.join_token : null
  address_range  = local.is_local ? var.address_range : null
  state_dir      = local.is_local ? coalesce(var.state_dir, pathexpand("~/.local/state/neutral/node-pool/${var.region}")) : null
  agent_args     = local.is_local ? var.agent_args : null
  neutral_binary = local.is_local ? var.neutral_binary : null

  docker_image    = local.is_docker ? var.docker_image : null
  docker_network  = local.is_docker ? var.docker_network : null
  docker_args     = local.is_docker ? var.docker_args : null
  docker_binaries = local.is_docker ? var.docker_binaries : null

  lifecycle {
    precondition {
      condition     = local.min_nodes != null && local.max_nodes != null
      error_message = "Set min_nodes and max_nodes, or platform_config with a declaration of region ${var.region}."
    }
  }
}

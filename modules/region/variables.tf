variable "region" {
  description = "The region's name: platform-config/regions/<region>.yaml."
  type        = string
}

variable "desired_nodes" {
  description = "Nodes wanted (infra/node-pool/<region>.tfvars); clamped to [min_nodes, max_nodes]."
  type        = number
}

variable "platform_config" {
  description = "Path of platform-config/. When set, min_nodes, max_nodes and the launcher default to the region's declaration."
  type        = string
  default     = null
}

variable "min_nodes" {
  description = "The fewest nodes. Default: min_nodes of platform-config/regions/<region>.yaml."
  type        = number
  default     = null
}

variable "max_nodes" {
  description = "The most nodes. Default: max_nodes of platform-config/regions/<region>.yaml."
  type        = number
  default     = null
}

variable "launcher" {
  description = "local (an agent process per slot on this machine), docker (a container per slot) or external (slots only). Default: local when the region's provider is local, else external."
  type        = string
  default     = null
}

variable "drain_grace" {
  description = "Extra time a drained node keeps running after the longest TTL of its region's domains (provider default 10s)."
  type        = string
  default     = null
}

variable "control_plane" {
  description = "local launcher: the control-plane URL agents register with (default: the provider's endpoint)."
  type        = string
  default     = null
}

variable "join_token" {
  description = "local launcher: the join token (default: env NEUTRAL_JOIN_TOKEN of Terraform, which keeps it out of the state)."
  type        = string
  default     = null
  sensitive   = true
}

variable "address_range" {
  description = "local launcher: addresses the nodes take, e.g. 127.0.0.50-127.0.0.59 or a CIDR block."
  type        = string
  default     = null
}

variable "state_dir" {
  description = "local launcher: absolute folder for the agents' pid files, identities and logs. Default: ~/.local/state/neutral/node-pool/<region>."
  type        = string
  default     = null
}

variable "agent_args" {
  description = "local launcher: extra flags for every neutral agent."
  type        = list(string)
  default     = []
}

variable "neutral_binary" {
  description = "local launcher: the neutral binary (default: next to the provider, else on PATH)."
  type        = string
  default     = null
}

variable "docker_image" {
  description = "docker launcher: the image of every node's container (never pulled)."
  type        = string
  default     = null
}

variable "docker_network" {
  description = "docker launcher: the region's Docker network; {region} stands for the region (edge-{region})."
  type        = string
  default     = null
}

variable "docker_args" {
  description = "docker launcher: extra docker run flags ({slot}, {address} and {slot_dir} are filled in)."
  type        = list(string)
  default     = []
}

variable "docker_binaries" {
  description = "docker launcher: the folder holding the neutral binary, mounted read-only into every container."
  type        = string
  default     = null
}

variable "region" {
  description = "The region (from <region>.tfvars)."
  type        = string
}

variable "desired_nodes" {
  description = "Nodes wanted (from <region>.tfvars)."
  type        = number
}

variable "launcher" {
  description = "local, docker or external; default: local when the region's provider is local, else external. Set with TF_VAR_launcher."
  type        = string
  default     = null
}

variable "drain_grace" {
  description = "Extra time a drained node keeps running after the TTL (default 10s)."
  type        = string
  default     = null
}

variable "join_token" {
  description = "Join token for local agents; default: env NEUTRAL_JOIN_TOKEN (keeps it out of the state). Set with TF_VAR_join_token."
  type        = string
  default     = null
  sensitive   = true
}

variable "address_ranges" {
  description = "Addresses of local nodes per region. Override with TF_VAR_address_ranges."
  type        = map(string)
  default = {
    local = "127.0.0.50-127.0.0.59"
  }
}

variable "state_root" {
  description = "Absolute folder holding each local region's agent files (<state_root>/<region>); default ~/.local/state/neutral/node-pool. Set with TF_VAR_state_root."
  type        = string
  default     = null
}

variable "agent_args" {
  description = "Extra flags for every local neutral agent (e.g. the full-node runtime flags)."
  type        = list(string)
  default     = []
}

variable "neutral_binary" {
  description = "The neutral binary for local agents; default: next to the provider, else on PATH."
  type        = string
  default     = null
}

variable "control_planes" {
  description = "The control-plane URL the agents of each region register with (local and docker launchers); default: the provider's endpoint. Set with TF_VAR_control_planes."
  type        = map(string)
  default     = {}
}

variable "docker_image" {
  description = "docker launcher: the image of every node's container. Set with TF_VAR_docker_image."
  type        = string
  default     = null
}

variable "docker_network" {
  description = "docker launcher: each region's Docker network, {region} standing for the region (edge-{region}). Set with TF_VAR_docker_network."
  type        = string
  default     = null
}

variable "docker_args" {
  description = "docker launcher: extra docker run flags. Set with TF_VAR_docker_args."
  type        = list(string)
  default     = []
}

variable "docker_binaries" {
  description = "docker launcher: the folder holding the neutral binary on the Docker host. Set with TF_VAR_docker_binaries."
  type        = string
  default     = null
}

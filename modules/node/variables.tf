variable "region" {
  description = "The region the nodes serve (platform-config/regions/<region>.yaml)."
  type        = string
}

variable "slots" {
  description = "The slot names, e.g. neutral_node_pool.<region>.slots (module.region.slots): one user-data each; the slot is the agent's --hostname."
  type        = set(string)
}

variable "control_plane" {
  description = "The control plane's base URL the agents register with."
  type        = string
}

variable "join_token" {
  description = "The join token (or a region join token); it lands in the user-data, so keep the state and the instances' metadata private."
  type        = string
  sensitive   = true
}

variable "binary_url" {
  description = "Where the instance downloads the neutral binary."
  type        = string
}

variable "binary_sha256" {
  description = "The binary's sha256; a mismatch stops the node's set-up."
  type        = string
}

variable "ca_pem" {
  description = "PEM of the CA that signed the control plane's certificate; null: the system's roots."
  type        = string
  default     = null
}

variable "image" {
  description = "The first release's image reference; null: none until a release."
  type        = string
  default     = null
}

variable "image_archive_url" {
  description = "Where the instance downloads the first release's image archive (an OCI tarball imported at the agent's start), for networks without a registry; null: none."
  type        = string
  default     = null
}

variable "apt_sources_list" {
  description = "Replaces the instance's /etc/apt/sources.list (e.g. an internal mirror); null: the image's own sources."
  type        = string
  default     = null
}

variable "packages" {
  description = "The Debian packages a node needs (as the neutral_node role installs them), and curl for the downloads."
  type        = list(string)
  default     = ["containerd", "runc", "nginx", "prometheus-node-exporter", "prometheus-blackbox-exporter", "curl"]
}

variable "settings" {
  description = "The neutral_node role's unit settings, for the same unit: dns_ttl, drain_grace, health_path, blue_port, green_port, containerd_namespace."
  type = object({
    dns_ttl              = optional(string, "30s")
    drain_grace          = optional(string, "")
    health_path          = optional(string, "/healthz")
    blue_port            = optional(number, 18080)
    green_port           = optional(number, 28080)
    containerd_namespace = optional(string, "neutral")
  })
  default = {}
}

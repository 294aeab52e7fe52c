variable "repo" {
  description = "The Git URL of the configuration repository the control plane follows."
  type        = string
}

variable "branch" {
  description = "The branch it follows."
  type        = string
  default     = "main"
}

variable "admin_token" {
  description = "The admin token (16+ characters); it lands in the user-data, so keep the state and the instance's metadata private."
  type        = string
  sensitive   = true
  validation {
    condition     = length(var.admin_token) >= 16
    error_message = "admin_token must be at least 16 characters."
  }
}

variable "join_token" {
  description = "The nodes' join token (16+ characters, not the admin token)."
  type        = string
  sensitive   = true
  validation {
    condition     = length(var.join_token) >= 16
    error_message = "join_token must be at least 16 characters."
  }
}

variable "viewer_token" {
  description = "A read-only token for dashboards and the status page; null: none."
  type        = string
  default     = null
  sensitive   = true
}

variable "repo_credentials" {
  description = "One git-credential-store line for the repository (https://USER:TOKEN@host); null: none needed."
  type        = string
  default     = null
  sensitive   = true
}

variable "store_url" {
  description = "A postgres:// store URL (?sslmode=verify-full&sslrootcert=… for TLS); null: SQLite in the data folder."
  type        = string
  default     = null
  sensitive   = true
}

variable "binary_url" {
  description = "Where the instance downloads the neutral binary."
  type        = string
}

variable "binary_sha256" {
  description = "The binary's sha256; a mismatch stops the set-up."
  type        = string
}

variable "listen" {
  description = "Where the API listens."
  type        = string
  default     = "0.0.0.0:7400"
}

variable "dns_listen" {
  description = "Where the embedded DNS server listens."
  type        = string
  default     = "0.0.0.0:53"
}

variable "extra_args" {
  description = "Extra `neutral serve` flags."
  type        = list(string)
  default     = []
}

variable "apt_sources_list" {
  description = "Replaces the instance's /etc/apt/sources.list (e.g. an internal mirror); null: the image's own sources."
  type        = string
  default     = null
}


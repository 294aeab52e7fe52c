terraform {
  required_providers {
    neutral = {
      source = "neutral/neutral"
    }
  }
}

variable "neutral_token" {
  description = "The control plane's admin token."
  type        = string
  sensitive   = true
}

variable "powerdns_api_key" {
  description = "PowerDNS' API key."
  type        = string
  sensitive   = true
}

provider "neutral" {
  endpoint = "http://127.0.0.1:7400" # else env NEUTRAL_ENDPOINT
  token    = var.neutral_token       # else env NEUTRAL_TOKEN

  # Optional: only for records with dns = "powerdns".
  powerdns {
    url       = "http://127.0.0.1:8081"
    api_key   = var.powerdns_api_key # else env PDNS_API_KEY
    server_id = "localhost"
  }
}

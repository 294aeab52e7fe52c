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

variable "cloudflare_api_token" {
  description = "A Cloudflare API token with DNS edit permission."
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

  # Optional: only for records with dns = "route53". Credentials default to
  # env AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
  route53 {
    wait_for_sync = true
    owner_id      = "prod"
  }

  # Optional: only for records with dns = "cloudflare".
  cloudflare {
    api_token  = var.cloudflare_api_token # else env CLOUDFLARE_API_TOKEN
    batch_size = 200                      # the zone plan's batch limit: 200 Free, 3500 Pro+
    owner_id   = "prod"
  }

  # Optional: only for records with dns = "alidns". Credentials default to
  # env ALIBABA_CLOUD_ACCESS_KEY_ID / ALIBABA_CLOUD_ACCESS_KEY_SECRET.
  alidns {
    owner_id = "prod"
  }
}

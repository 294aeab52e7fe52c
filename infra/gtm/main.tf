# The GTM root: one neutral_gtm_record per platform-config/gtm/*.yaml, keyed
# by domain, in one state. The scheduler in `neutral serve` runs it on
# pushes and, on health changes, only the affected record:
#   -target='module.gtm.neutral_gtm_record.this["<domain>"]'
#
# Provider settings come from the environment: NEUTRAL_ENDPOINT and
# NEUTRAL_TOKEN (the control plane and its admin token), PDNS_API_KEY when
# a policy uses PowerDNS (with TF_VAR_powerdns_url).

terraform {
  required_version = ">= 1.5"
  required_providers {
    neutral = {
      source = "neutral/neutral"
    }
  }
}

variable "powerdns_url" {
  description = "Base URL of the PowerDNS HTTP API, for policies with dns: powerdns (API key: env PDNS_API_KEY)."
  type        = string
  default     = null
}

provider "neutral" {
  dynamic "powerdns" {
    for_each = var.powerdns_url == null ? [] : [var.powerdns_url]
    content {
      url = powerdns.value
    }
  }
}

module "gtm" {
  source          = "../../modules/gtm"
  platform_config = "${path.root}/../../platform-config"
}

# No live values (weights, answers) as root outputs: a refresh would change
# them and every drift check would report drift.
output "skipped" {
  description = "Domains whose DNS backend this provider does not manage yet."
  value       = module.gtm.skipped
}

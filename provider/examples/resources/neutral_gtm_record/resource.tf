# app.example.com in the control plane's embedded DNS server: jp takes twice
# sg's share while both are healthy.
resource "neutral_gtm_record" "app" {
  domain          = "app.example.com"
  zone            = "example.com"
  type            = "A"
  ttl             = 30
  dns             = "embedded"
  min_ready_nodes = 1
  regions         = { jp = 100, sg = 50 }
  all_down        = "fail_open"
}

# The same policy served by PowerDNS (a LUA pickwrandom record when the node
# weights differ, a plain A rrset when they are equal).
resource "neutral_gtm_record" "api" {
  domain   = "api.example.org"
  zone     = "example.org"
  dns      = "powerdns"
  regions  = { jp = 100, sg = 100 }
  all_down = "last_known_good"
}

# One weighted Route53 record set per node, weights scaled to 0..255; a TXT
# registry record _neutral-a.www.example.net marks them as this deployment's.
resource "neutral_gtm_record" "www" {
  domain  = "www.example.net"
  zone    = "example.net"
  dns     = "route53"
  ttl     = 60
  regions = { jp = 100, sg = 50 }
}

# Cloudflare has no weights: one plain record per node with a positive
# weight. TTL 1 is Cloudflare's automatic TTL, else at least 60.
resource "neutral_gtm_record" "edge" {
  domain  = "edge.example.dev"
  zone    = "example.dev"
  dns     = "cloudflare"
  ttl     = 60
  regions = { jp = 100, sg = 100 }
}

# AliDNS weighted round robin, weights 1..100; AliDNS' free edition takes
# TTLs of 600 and up.
resource "neutral_gtm_record" "cn" {
  domain  = "cn.example.cn"
  zone    = "example.cn"
  dns     = "alidns"
  ttl     = 600
  regions = { jp = 100, sg = 50 }
}

output "app_answers" {
  value = neutral_gtm_record.app.answers
}

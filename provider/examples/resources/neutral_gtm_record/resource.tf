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

output "app_answers" {
  value = neutral_gtm_record.app.answers
}

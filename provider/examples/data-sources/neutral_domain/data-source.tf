data "neutral_domain" "app" {
  domain = "app.example.com"
}

output "app_effective_weights" {
  value = data.neutral_domain.app.effective_weights
}

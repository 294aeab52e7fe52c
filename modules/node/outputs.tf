output "user_data" {
  description = "cloud-init user-data per slot (a Jinja-templated #cloud-config)."
  value       = local.user_data
  sensitive   = true
}

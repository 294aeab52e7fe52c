output "user_data" {
  description = "cloud-init user-data of the control plane's VM (a Jinja-templated #cloud-config)."
  value       = local.user_data
  sensitive   = true
  precondition {
    condition     = var.join_token != var.admin_token
    error_message = "join_token must differ from admin_token: every node holds the join token."
  }
}

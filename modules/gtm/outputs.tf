output "domains" {
  description = "The domains with a record, each with its effective weights."
  value       = { for domain, record in neutral_gtm_record.this : domain => record.effective_weights }
}

output "answers" {
  description = "Each domain's answers: node, region, address, weight."
  value       = { for domain, record in neutral_gtm_record.this : domain => record.answers }
}

output "skipped" {
  description = "Domains whose policy names a DNS backend outside var.backends."
  value       = sort([for domain, policy in local.policies : domain if !contains(keys(local.managed), domain)])
}

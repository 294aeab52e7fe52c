# One neutral_gtm_record per GTM policy in Git, keyed by domain, so that
# module.<name>.neutral_gtm_record.this["<domain>"] addresses one record
# (the scheduler targets it on health changes). Git's YAML is the single
# source: nothing here repeats a policy.

locals {
  gtm_dir     = "${var.platform_config}/gtm"
  regions_dir = "${var.platform_config}/regions"

  policies = {
    for file in fileset(local.gtm_dir, "*.yaml") :
    yamldecode(file("${local.gtm_dir}/${file}")).domain => yamldecode(file("${local.gtm_dir}/${file}"))
  }

  # A policy without `regions` is served by every region at its base weight.
  base_weights = {
    for file in fileset(local.regions_dir, "*.yaml") :
    yamldecode(file("${local.regions_dir}/${file}")).name => try(yamldecode(file("${local.regions_dir}/${file}")).base_weight, 100)
  }

  managed = {
    for domain, policy in local.policies : domain => policy
    if contains(var.backends, try(policy.dns, "embedded"))
  }
}

resource "neutral_gtm_record" "this" {
  for_each = local.managed

  domain          = each.key
  zone            = each.value.zone
  type            = try(each.value.type, null)
  ttl             = try(each.value.ttl, null)
  dns             = try(each.value.dns, null)
  min_ready_nodes = try(each.value.min_ready_nodes, null)
  regions         = length(try(each.value.regions, {})) > 0 ? tomap(each.value.regions) : tomap(local.base_weights)
  all_down        = try(each.value.all_down, null)
}

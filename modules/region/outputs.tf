output "id" {
  description = "The pool's id (the region)."
  value       = neutral_node_pool.this.id
}

output "slots" {
  description = "Stable slot keys (<region>-<n>), known at plan time: for_each = toset(module.<name>.slots) over cloud instances."
  value       = neutral_node_pool.this.slots
}

output "nodes" {
  description = "One entry per slot: slot, node_id, address, status."
  value       = neutral_node_pool.this.nodes
}

output "ready_count" {
  description = "Slots whose node is up."
  value       = neutral_node_pool.this.ready_count
}

output "reasons" {
  description = "Why the slots are what they are."
  value       = neutral_node_pool.this.reasons
}

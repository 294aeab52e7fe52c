# Region jp on this machine: an agent per slot on 127.0.0.50 and up. The join
# token comes from env NEUTRAL_JOIN_TOKEN, which keeps it out of the state.
resource "neutral_node_pool" "jp" {
  region        = "jp"
  min_nodes     = 1
  max_nodes     = 5
  desired_nodes = 2
  launcher      = "local"
  drain_grace   = "10s"
  address_range = "127.0.0.50-127.0.0.59"
  state_dir     = "/var/lib/neutral/node-pool/jp"
  agent_args    = ["--metrics-file", "/run/neutral/jp.prom"]
}

# Region sg on machines made by other resources, one per slot: the pool
# publishes stable slot keys and drains a slot's node before it goes.
resource "neutral_node_pool" "sg" {
  region        = "sg"
  min_nodes     = 1
  max_nodes     = 4
  desired_nodes = 1
  launcher      = "external"
}

resource "terraform_data" "sg_machine" {
  for_each = toset(neutral_node_pool.sg.slots)
  # A cloud instance would go here; its agent runs with --hostname each.key.
  input = each.key
}

output "jp_nodes" {
  value = neutral_node_pool.jp.nodes
}

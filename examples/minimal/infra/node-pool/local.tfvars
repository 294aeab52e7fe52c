# infra/node-pool/local.tfvars — written by people and by the autoscaler.
region        = "local"
desired_nodes = 1

# infra/node-pool/sg.tfvars — written by people and by the autoscaler.
region        = "sg"
desired_nodes = 1

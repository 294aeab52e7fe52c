# infra/node-pool/jp.tfvars — written by people and by the autoscaler.
# The autoscaler rewrites desired_nodes in place and keeps these comments.
region        = "jp"
desired_nodes = 1

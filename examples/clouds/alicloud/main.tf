# Region sg's node pool on Alibaba Cloud ECS: the same shape as the AWS
# example — modules/region's slots, modules/node's user-data, one instance
# per slot. Not applied by neutral's tests (no cloud account here);
# `terraform fmt -check` is.

terraform {
  required_version = ">= 1.5"
  required_providers {
    neutral = {
      source = "neutral/neutral"
    }
    alicloud = {
      source  = "aliyun/alicloud"
      version = "~> 1.230"
    }
  }
}

variable "region" {
  type = string
}

variable "desired_nodes" {
  type = number
}

variable "join_token" {
  description = "A join token for the region's agents (TF_VAR_join_token); it lands in the instances' user-data."
  type        = string
  sensitive   = true
}

variable "control_plane" {
  description = "The control plane's URL as the instances reach it."
  type        = string
}

variable "neutral_release" {
  description = "The neutral binary the instances download, and its sha256."
  type        = object({ url = string, sha256 = string })
}

variable "vswitch_ids" {
  description = "VSwitches of the region's VPC; slots are spread over them."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups: 80 from clients and the control plane's probes; 9100 from Prometheus."
  type        = list(string)
}

provider "neutral" {}

provider "alicloud" {
  region = "ap-southeast-1"
}

module "region" {
  source          = "../../../modules/region"
  platform_config = "${path.root}/../../../platform-config"
  region          = var.region
  desired_nodes   = var.desired_nodes
  launcher        = "external"
}

module "nodes" {
  source        = "../../../modules/node"
  region        = var.region
  slots         = toset(module.region.slots)
  control_plane = var.control_plane
  join_token    = var.join_token
  binary_url    = var.neutral_release.url
  binary_sha256 = var.neutral_release.sha256
}

data "alicloud_images" "debian" {
  owners      = "system"
  name_regex  = "^debian_12_"
  most_recent = true
}

resource "alicloud_instance" "node" {
  for_each                   = toset(module.region.slots)
  instance_name              = each.key
  host_name                  = each.key
  image_id                   = data.alicloud_images.debian.images[0].id
  instance_type              = "ecs.t6-c1m2.large"
  vswitch_id                 = var.vswitch_ids[index(module.region.slots, each.key) % length(var.vswitch_ids)]
  security_groups            = var.security_group_ids
  user_data                  = base64encode(module.nodes.user_data[each.key])
  internet_max_bandwidth_out = 0
  tags = {
    neutral-slot = each.key
    neutral-pool = var.region
  }
  lifecycle {
    create_before_destroy = true
  }
}

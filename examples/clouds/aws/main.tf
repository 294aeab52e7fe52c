# Region jp's node pool on AWS EC2: neutral decides how many nodes (the
# autoscaler's infra/node-pool/jp.tfvars), modules/region turns that into
# slots, and one aws_instance per slot boots Debian 12 with the user-data of
# modules/node, which makes it a node under the slot's name. Not applied by
# neutral's tests (no cloud account here); `terraform fmt -check` is.
#
# Put it in infra/node-pool/ of a platform repository in place of the
# example in infra/node-pool/main.tf, with the region's launcher external.

terraform {
  required_version = ">= 1.5"
  required_providers {
    neutral = {
      source = "neutral/neutral"
    }
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.0"
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

variable "subnet_ids" {
  description = "Subnets of the AWS region's VPC; slots are spread over them."
  type        = list(string)
}

variable "security_group_ids" {
  description = "Security groups: 80 from clients and the control plane's probes; 9100 from Prometheus."
  type        = list(string)
}

provider "neutral" {}

provider "aws" {
  region = "ap-northeast-1"
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

# Debian 12 (bookworm), amd64, from Debian's own AWS account.
data "aws_ami" "debian" {
  most_recent = true
  owners      = ["136693071363"]
  filter {
    name   = "name"
    values = ["debian-12-amd64-*"]
  }
}

resource "aws_instance" "node" {
  for_each               = toset(module.region.slots)
  ami                    = data.aws_ami.debian.id
  instance_type          = "t3.small"
  subnet_id              = var.subnet_ids[index(module.region.slots, each.key) % length(var.subnet_ids)]
  vpc_security_group_ids = var.security_group_ids
  user_data              = module.nodes.user_data[each.key]
  tags = {
    Name          = each.key
    neutral-slot  = each.key
    neutral-pool  = var.region
    neutral-owner = "terraform"
  }
  # A slot's machine is replaced, never edited in place: a new one registers
  # under the same slot name, and the pool drains the old one.
  lifecycle {
    create_before_destroy = true
  }
}

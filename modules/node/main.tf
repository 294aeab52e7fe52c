# cloud-init user-data that turns a fresh Debian 12 VM into a neutral node,
# one per slot, the way config/roles/neutral_node does: the same packages,
# the binary checked against its sha256, the join token in a 0600 file, and
# the same unit — the role's own template
# (config/roles/neutral_node/templates/neutral-agent.service.j2), rendered by
# cloud-init's Jinja from the variables this module sets, so the unit has
# one source.
#
#   resource "aws_instance" "node" {
#     for_each  = toset(module.jp.slots)
#     user_data = module.jp_nodes.user_data[each.key]
#   }

locals {
  unit_template = file("${path.module}/../../config/roles/neutral_node/templates/neutral-agent.service.j2")

  # Jinja string literals (JSON's escapes are Jinja's too).
  jinja = {
    neutral_region                    = jsonencode(var.region)
    neutral_control_plane             = jsonencode(var.control_plane)
    neutral_node_binary_path          = jsonencode("/usr/local/bin/neutral")
    neutral_node_etc_dir              = jsonencode("/etc/neutral")
    neutral_node_lib_dir              = jsonencode("/var/lib/neutral")
    neutral_node_ca_file              = jsonencode(var.ca_pem == null ? "" : "ca.pem")
    neutral_node_ip                   = jsonencode("")
    neutral_node_listen               = jsonencode("")
    neutral_node_dns_ttl              = jsonencode(var.settings.dns_ttl)
    neutral_node_drain_grace          = jsonencode(var.settings.drain_grace)
    neutral_node_health_path          = jsonencode(var.settings.health_path)
    neutral_node_blue_port            = jsonencode(var.settings.blue_port)
    neutral_node_green_port           = jsonencode(var.settings.green_port)
    neutral_node_containerd_namespace = jsonencode(var.settings.containerd_namespace)
    neutral_node_image                = jsonencode(var.image == null ? "" : var.image)
    neutral_node_image_archive        = jsonencode(local.image_archive)
  }

  # The image archive's file name on the instance (the agent imports
  # /var/lib/neutral/images/<name>).
  image_archive = var.image_archive_url == null ? "" : element(split("/", var.image_archive_url), length(split("/", var.image_archive_url)) - 1)

  downloads = concat(
    ["curl -fsSL -o /usr/local/bin/neutral.download '${var.binary_url}'",
      "echo '${var.binary_sha256}  /usr/local/bin/neutral.download' | sha256sum -c -",
    "install -m 0755 /usr/local/bin/neutral.download /usr/local/bin/neutral", "rm -f /usr/local/bin/neutral.download"],
    var.image_archive_url == null ? [] : ["curl -fsSL -o '/var/lib/neutral/images/${local.image_archive}' '${var.image_archive_url}'"],
  )

  user_data = {
    for slot in var.slots : slot => join("\n", concat(
      ["## template: jinja", "#cloud-config"],
      [for name in sort(keys(local.jinja)) : "{% set ${name} = ${local.jinja[name]} %}"],
      ["{% set neutral_node_slot = ${jsonencode(slot)} %}"],
      [yamlencode(merge(var.apt_sources_list == null ? {} : {
        apt = { preserve_sources_list = false, sources_list = var.apt_sources_list }
        }, {
        package_update = true
        packages       = var.packages
        write_files = concat(
          [
            {
              path        = "/etc/neutral/join-token"
              permissions = "0600"
              owner       = "root:root"
              content     = "${var.join_token}\n"
            },
            {
              path        = "/etc/systemd/system/neutral-agent.service"
              permissions = "0644"
              owner       = "root:root"
              # Rendered by cloud-init's Jinja with the values set above.
              content = local.unit_template
            },
          ],
          var.ca_pem == null ? [] : [{
            path        = "/etc/neutral/ca.pem"
            permissions = "0644"
            owner       = "root:root"
            content     = var.ca_pem
          }],
        )
        runcmd = [
          ["install", "-d", "-m", "0700", "/etc/neutral", "/var/lib/neutral", "/var/lib/neutral/images"],
          ["sh", "-ec", join(" && ", local.downloads)],
          ["systemctl", "disable", "--now", "nginx"],
          ["systemctl", "daemon-reload"],
          ["systemctl", "enable", "--now", "neutral-agent"],
        ]
      }))],
    ))
  }
}

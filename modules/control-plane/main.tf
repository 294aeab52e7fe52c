# cloud-init user-data that turns a fresh Debian 12 VM into a neutral
# control plane the way config/roles/neutral_control_plane does: the system
# user `neutral`, the binary checked against its sha256, the tokens and the
# repository's credentials in /etc/neutral (0640 root:neutral), the store
# URL in the unit's environment file, and the role's own unit template
# (config/roles/neutral_control_plane/templates/neutral-serve.service.j2),
# rendered by cloud-init's Jinja from the values set here.
#
#   resource "aws_instance" "control_plane" {
#     user_data = module.control_plane.user_data
#   }

locals {
  unit_template = file("${path.module}/../../config/roles/neutral_control_plane/templates/neutral-serve.service.j2")

  # Jinja literals (JSON's are Jinja's too); the TLS and Terraform options
  # of the role are not offered here (extra_args covers other flags).
  jinja = {
    neutral_control_plane_binary_path      = jsonencode("/usr/local/bin/neutral")
    neutral_control_plane_repo             = jsonencode(var.repo)
    neutral_control_plane_branch           = jsonencode(var.branch)
    neutral_control_plane_data_dir         = jsonencode("/var/lib/neutral")
    neutral_control_plane_etc_dir          = jsonencode("/etc/neutral")
    neutral_control_plane_bin_dir          = jsonencode("/usr/local/lib/neutral")
    neutral_control_plane_user             = jsonencode("neutral")
    neutral_control_plane_listen           = jsonencode(var.listen)
    neutral_control_plane_dns_listen       = jsonencode(var.dns_listen)
    neutral_control_plane_viewer_token     = jsonencode(var.viewer_token == null ? "" : "set")
    neutral_control_plane_repo_credentials = jsonencode(var.repo_credentials == null ? "" : "set")
    neutral_control_plane_tls_cert_src     = jsonencode("")
    neutral_control_plane_run_terraform    = "false"
    neutral_control_plane_extra_args       = jsonencode(var.extra_args)
  }

  secret = {
    "admin-token"      = var.admin_token
    "join-token"       = var.join_token
    "viewer-token"     = var.viewer_token == null ? "" : var.viewer_token
    "repo-credentials" = var.repo_credentials == null ? "" : var.repo_credentials
    "serve.env"        = var.store_url == null ? "# SQLite in the data folder" : "NEUTRAL_STORE=${var.store_url}"
  }

  user_data = join("\n", concat(
    ["## template: jinja", "#cloud-config"],
    [for name in sort(keys(local.jinja)) : "{% set ${name} = ${local.jinja[name]} %}"],
    [yamlencode(merge(var.apt_sources_list == null ? {} : {
      apt = { preserve_sources_list = false, sources_list = var.apt_sources_list }
      }, {
      package_update = var.apt_sources_list != null
      packages       = ["curl", "ca-certificates"]
      write_files = concat(
        [for file in sort(keys(local.secret)) : {
          path        = "/etc/neutral/${file}"
          permissions = "0640"
          owner       = "root:root"
          content     = "${local.secret[file]}\n"
        }],
        [{
          path        = "/etc/systemd/system/neutral-serve.service"
          permissions = "0644"
          owner       = "root:root"
          # Rendered by cloud-init's Jinja with the values set above.
          content = local.unit_template
        }],
      )
      runcmd = [
        ["sh", "-ec", "id neutral >/dev/null 2>&1 || useradd --system --shell /usr/sbin/nologin --home-dir /var/lib/neutral --no-create-home neutral"],
        ["sh", "-ec", "chown root:neutral /etc/neutral /etc/neutral/* && chmod 0750 /etc/neutral && chmod 0640 /etc/neutral/*"],
        ["install", "-d", "-m", "0700", "-o", "neutral", "-g", "neutral", "/var/lib/neutral", "/var/lib/neutral-terraform"],
        ["sh", "-ec", join(" && ", [
          "curl -fsSL -o /usr/local/bin/neutral.download '${var.binary_url}'",
          "echo '${var.binary_sha256}  /usr/local/bin/neutral.download' | sha256sum -c -",
          "install -m 0755 /usr/local/bin/neutral.download /usr/local/bin/neutral",
          "rm -f /usr/local/bin/neutral.download",
        ])],
        ["systemctl", "daemon-reload"],
        ["systemctl", "enable", "--now", "neutral-serve"],
      ]
    }))],
  ))
}

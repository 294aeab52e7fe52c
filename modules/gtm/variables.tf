variable "platform_config" {
  description = "Path of platform-config/: one neutral_gtm_record per gtm/*.yaml; regions/*.yaml give base weights to a policy without regions."
  type        = string
}

variable "backends" {
  description = "DNS backends this provider manages; policies naming another backend are left out (see the skipped output)."
  type        = set(string)
  default     = ["embedded", "powerdns"]
}

data "neutral_region" "jp" {
  name = "jp"
}

output "jp_state" {
  value = "${data.neutral_region.jp.state}: ${data.neutral_region.jp.ready}/${data.neutral_region.jp.desired} ready"
}

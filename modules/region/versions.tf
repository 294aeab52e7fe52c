terraform {
  required_version = ">= 1.5"
  required_providers {
    neutral = {
      source = "neutral/neutral"
    }
  }
}

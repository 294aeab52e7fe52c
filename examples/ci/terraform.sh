#!/usr/bin/env bash
# Plans and applies neutral's Terraform roots the way `neutral serve
# --run-terraform` does, for CI that runs Terraform itself.
#   examples/ci/terraform.sh [REPO_ROOT]   (default: the current folder)
# PLAN_ONLY=1 plans without applying (for merge requests / drift checks).
# NEUTRAL_TERRAFORM_STATE=postgres://… keeps each root and workspace's state
# in PostgreSQL (Terraform's pg backend), in the schema `neutral serve
# --terraform-state` uses for it, so CI and the control plane share state
# and its lock.
set -euo pipefail
repo=$(cd "${1:-.}" && pwd)
tf=${TERRAFORM_BIN:-terraform}
plan_only=${PLAN_ONLY:-0}
state_url=${NEUTRAL_TERRAFORM_STATE:-}
override=_neutral_backend_override.tf

state_schema() {   # state_schema ROOT WORKSPACE: as neutral's scheduler names it
  local name
  name=$(printf 'neutral_tf_%s_%s' "$1" "$2" | tr 'A-Z' 'a-z' | sed 's/[^a-z0-9]/_/g')
  if (( ${#name} > 63 )); then
    name="${name:0:50}_$(printf '%s\0%s' "$1" "$2" | sha256sum | cut -c1-12)"
  fi
  printf '%s' "$name"
}

run_root() {   # run_root DIR NAME ROOT WORKSPACE [VAR_FILE]
  local dir=$1 name=$2 root=$3 workspace=$4 var_file=${5:-}
  local plan="$RUNNER_TEMP_DIR/$name.tfplan"
  local args=(-input=false -lock-timeout=120s -detailed-exitcode "-out=$plan")
  [[ -n $var_file ]] && args+=("-var-file=$var_file")
  echo "== $name"
  # One data folder per state, as the scheduler keeps one state per region.
  export TF_DATA_DIR="$RUNNER_TEMP_DIR/$name.terraform"
  if [[ -n $state_url ]]; then
    # The URL stays in the environment, never in a file.
    printf 'terraform {\n  backend "pg" {}\n}\n' > "$dir/$override"
    export PG_CONN_STR=$state_url
    PG_SCHEMA_NAME=$(state_schema "$root" "$workspace")
    export PG_SCHEMA_NAME
  fi
  (cd "$dir" && "$tf" init -input=false -reconfigure >/dev/null)
  set +e
  (cd "$dir" && "$tf" plan "${args[@]}")
  local code=$?
  set -e
  case $code in
    0) echo "$name: no changes" ;;
    2) if [[ $plan_only == 1 ]]; then
         echo "$name: changes planned (not applied: PLAN_ONLY=1)"
       else
         (cd "$dir" && "$tf" apply -input=false -lock-timeout=120s "$plan")
       fi ;;
    *) echo "$name: plan failed" >&2; return "$code" ;;
  esac
}

RUNNER_TEMP_DIR=$(mktemp -d)
trap 'rm -rf "$RUNNER_TEMP_DIR" "$repo/infra/node-pool/$override" "$repo/infra/gtm/$override"' EXIT
for tfvars in "$repo"/infra/node-pool/*.tfvars; do
  region=$(basename "$tfvars" .tfvars)
  run_root "$repo/infra/node-pool" "node-pool-$region" infra/node-pool "$region" "$tfvars"
done
run_root "$repo/infra/gtm" "gtm" infra/gtm default

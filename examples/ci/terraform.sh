#!/usr/bin/env bash
# Plans and applies neutral's Terraform roots the way `neutral serve
# --run-terraform` does, for CI that runs Terraform itself.
#   examples/ci/terraform.sh [REPO_ROOT]   (default: the current folder)
# PLAN_ONLY=1 plans without applying (for merge requests / drift checks).
set -euo pipefail
repo=$(cd "${1:-.}" && pwd)
tf=${TERRAFORM_BIN:-terraform}
plan_only=${PLAN_ONLY:-0}

run_root() {   # run_root DIR NAME [VAR_FILE]
  local dir=$1 name=$2 var_file=${3:-}
  local plan="$RUNNER_TEMP_DIR/$name.tfplan"
  local args=(-input=false -lock-timeout=120s -detailed-exitcode "-out=$plan")
  [[ -n $var_file ]] && args+=("-var-file=$var_file")
  echo "== $name"
  # One data folder per state, as the scheduler keeps one state per region.
  export TF_DATA_DIR="$RUNNER_TEMP_DIR/$name.terraform"
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
trap 'rm -rf "$RUNNER_TEMP_DIR"' EXIT
for tfvars in "$repo"/infra/node-pool/*.tfvars; do
  region=$(basename "$tfvars" .tfvars)
  run_root "$repo/infra/node-pool" "node-pool-$region" "$tfvars"
done
run_root "$repo/infra/gtm" "gtm"

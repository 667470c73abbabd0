#!/usr/bin/env bash
# Deploy the connector to Fivetran with exactly the files production needs.
#
#   scripts/deploy.sh [--dry-run] <fivetran deploy options>
#
# Copies connector.py and requirements.txt into a fresh staging folder and runs `fivetran deploy` on that
# folder, passing every option through. So the SDK's requirements check (pipreqs) sees only the connector's
# imports, and the package holds those two files plus the configuration_form.pb the SDK generates, never
# tests/, bench/ or scripts/. A relative --configuration or --options-file is resolved from the folder the
# script is called from. Without --python-version the connection gets Python $DEPLOY_PYTHON (README,
# "Dependencies": ravendb's pinned ijson has wheels for it, and CI runs the tests on it).
#
# --dry-run stops before the upload: it runs `fivetran package` on the staging folder (the same requirements
# check and packaging `fivetran deploy` runs), keeps the folder, prints the package's path and the deploy
# command it would run (the API key masked). It uploads nothing and needs no API key.
set -euo pipefail

DEPLOY_PYTHON=3.11
repo="$(cd "$(dirname "$0")/.." && pwd)"

dry_run=false
python_version_given=false
configuration_given=false
prompt_mode=()
arguments=()

absolute() {
  case "$1" in
    /*) printf '%s\n' "$1" ;;
    "~"*) printf '%s\n' "$HOME${1#"~"}" ;;
    *) printf '%s\n' "$PWD/$1" ;;
  esac
}

while [ $# -gt 0 ]; do
  option="$1"
  shift
  case "$option" in
    --dry-run) dry_run=true; continue ;;
    --non-interactive | --yes | -f | --force) prompt_mode=("$option"); arguments+=("$option"); continue ;;
    -h | --help) exec fivetran deploy --help ;;
    --*=*) name="${option%%=*}"; value="${option#*=}" ;;
    --*)
      [ $# -gt 0 ] || { echo "deploy.sh: $option needs a value" >&2; exit 2; }
      name="$option"; value="$1"; shift ;;
    *)
      echo "deploy.sh: deploys this repository's connector; give no project path (got '$option')" >&2
      exit 2 ;;
  esac
  case "$name" in
    --configuration | --options-file) value="$(absolute "$value")" ;;
    --python-version | --python) python_version_given=true ;;
  esac
  [ "$name" = --configuration ] && configuration_given=true
  arguments+=("$name" "$value")
done

if ! $python_version_given; then
  arguments+=(--python-version "$DEPLOY_PYTHON")
fi
# Run in the repository, `fivetran deploy` would read its configuration.json when no configuration is given;
# keep that, since the staging folder has none.
if ! $configuration_given && [ -z "${FIVETRAN_CONFIGURATION:-}" ] && [ -f "$repo/configuration.json" ]; then
  arguments+=(--configuration "$repo/configuration.json")
fi

staging="$(mktemp -d)/ravendb-connector"
mkdir "$staging"
cp "$repo/connector.py" "$repo/requirements.txt" "$staging/"

if $dry_run; then
  fivetran package "$staging" ${prompt_mode[@]+"${prompt_mode[@]}"}
  shown=()
  masked=false
  for argument in "${arguments[@]}"; do
    if $masked; then shown+=("********"); masked=false; continue; fi
    case "$argument" in
      --api-key) masked=true; shown+=("$argument") ;;
      *) shown+=("$argument") ;;
    esac
  done
  echo "staging folder: $staging"
  echo "package: $staging/files/ravendb-connector.zip"
  echo "would run: fivetran deploy $staging ${shown[*]}"
  exit 0
fi

trap 'rm -rf "$(dirname "$staging")"' EXIT
fivetran deploy "$staging" "${arguments[@]}"

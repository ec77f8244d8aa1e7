#!/usr/bin/env bash
# Write what the cluster's processes need to know into ~/.sweeper/cluster.env (or $1), mode 0600,
# from this shell's environment. `ray up infra/cluster/aws-gpu.yaml` copies the file to every node,
# and each node sources it before `ray start`, so trials and the sweep driver inherit it.
# Re-run it and `ray up` again after changing a value: nodes read it only when Ray starts.
set -euo pipefail

out="${1:-$HOME/.sweeper/cluster.env}"
required=(MLFLOW_TRACKING_URI MLFLOW_TRACKING_USERNAME MLFLOW_TRACKING_PASSWORD SWEEPER_STORAGE)
# AWS keys only where the nodes have no instance role with access to SWEEPER_STORAGE's bucket;
# HF_TOKEN only for gated Hugging Face datasets.
optional=(SWEEPER_S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY AWS_SESSION_TOKEN AWS_DEFAULT_REGION
          HF_TOKEN)

for name in "${required[@]}"; do
  [[ -n "${!name:-}" ]] || { echo "write-env.sh: set $name (see infra/README.md)" >&2; exit 2; }
done

mkdir -p "$(dirname "$out")"
umask 077
# Written beside the target and renamed over it, so a node never copies half a file.
partial="$(mktemp "$out.XXXXXX")"
{
  echo "# Written by infra/cluster/write-env.sh; sourced before \`ray start\` on every node."
  for name in "${required[@]}" "${optional[@]}"; do
    if [[ -n "${!name:-}" ]]; then
      printf 'export %s=%q\n' "$name" "${!name}"
    fi
  done
} > "$partial"
mv "$partial" "$out"
echo "wrote $out"

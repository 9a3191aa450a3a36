#!/usr/bin/env bash
# Cluster benchmark on the one-node Slurm of scripts/slurm-one-node.sh: the `embed` stage on the
# first N real development posters (../shared/real-posters), run here, as 1 array task and as 2
# array tasks (both through a directory as the shared cache), and Slurm's own overhead per task
# (arrays of `true`). The node is this machine, so 2 tasks share its cores: the figure shows what
# the fan-out costs, not what a second node would give.
#
#   bash bench/cluster-embed.sh [POSTERS]     (default 600; 6923 takes ~6 minutes per row)
#
# Needs Slurm and munge (apt-get install slurmctld slurmd slurm-client munge), run as root.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$here/.."
posters=${1:-600}
real="$(realpath "$repo/../shared/real-posters")"
[ -f "$real/movies.csv" ] || { echo "error: $real/movies.csv is missing" >&2; exit 2; }
cargo build --release --workspace --quiet --manifest-path "$repo/Cargo.toml"
bin="$(realpath "$repo/target/release/pipeline")"
work="$here/work/cluster-embed"
rm -rf "$work" && mkdir -p "$work"
trap 'bash "$repo/scripts/slurm-one-node.sh" stop "$work/slurm"' EXIT
eval "$(bash "$repo/scripts/slurm-one-node.sh" start "$work/slurm")"

# The project: the default pipeline on the first N real posters (no years in that CSV).
prep="$work/prep"
mkdir -p "$prep/data"
head -n $((posters + 1)) "$real/movies.csv" >"$prep/data/movies.csv"
cp -r "$repo/models" "$prep/"
sed -e "s#csv: data/sample/movies.csv#csv: data/movies.csv#" \
    -e "s#root: data/sample #root: $real #" \
    -e "s#min_year: 2000 #min_year: null #" "$repo/pipeline.yaml" >"$prep/pipeline.yaml"
(cd "$prep" && "$bin" run split --push --remote "$work/remote-prep" >/dev/null)
echo "posters: $posters ($(nproc) cores, one node)"

now() { date +%s.%N; }
row() { # NAME ARGS...: embed from a copy of the prepared project and remote; prints seconds
  local name=$1; shift
  rm -rf "$work/$name" "$work/remote-$name"
  cp -r "$prep" "$work/$name"
  cp -r "$work/remote-prep" "$work/remote-$name"
  local t0 t1
  t0=$(now)
  (cd "$work/$name" && "$bin" run embed --remote "$work/remote-$name" "$@" >"$work/$name.log" 2>&1)
  t1=$(now)
  local sent
  sent=$(grep -o 'Sent embed to slurm: .*' "$work/$name.log" || echo "ran here")
  printf '%-22s %7.1f s   %s\n' "$name" "$(echo "$t1 - $t0" | bc)" "$sent"
}
row local --push
row slurm-1-task --executor slurm --shards 1
row slurm-2-tasks --executor slurm --shards 2
for name in slurm-1-task slurm-2-tasks; do
  diff <(grep -A2 '^  embed:' "$work/local/pipeline.lock" | grep digest) \
       <(grep -A2 '^  embed:' "$work/$name/pipeline.lock" | grep digest) >/dev/null \
    && echo "$name: embed output identical to the local run's" \
    || echo "$name: embed output DIFFERS from the local run's"
done

# Slurm's overhead per task: arrays of `true`, submitted and waited for.
printf '#!/bin/bash\ntrue\n' >"$work/true.sh"
for n in 1 20; do
  t0=$(now)
  sbatch --wait --quiet --array=0-$((n - 1)) -o /dev/null "$work/true.sh"
  t1=$(now)
  printf 'sbatch --wait of %2d `true` tasks: %5.2f s\n' "$n" "$(echo "$t1 - $t0" | bc)"
  eval "t_$n=$(echo "$t1 - $t0" | bc)"
done
printf 'scheduler overhead per extra task: %.2f s\n' "$(echo "($t_20 - $t_1) / 19" | bc -l)"

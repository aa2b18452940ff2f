#!/bin/sh
# The install steps every image shares, one layer each so that a source change rebuilds only the last:
#   install.sh base TORCH_INDEX_URL [EXTRA_TORCH_PACKAGE...]   venv in /opt/venv, the pinned torch, user 1000
#   install.sh deps                                            the project's pinned dependencies
#   install.sh project [EXTRAS]                                the project itself, then `pip check`
set -eu
PIP="/opt/venv/bin/pip install --no-cache-dir"
TORCH_PIN=2.13.0  # equal to pyproject.toml's (tests/test_kubeflow.py checks)
case "$1" in
  base)
    # --system-site-packages: a base image's own torch (cuda) or CANN packages (npu) stay visible
    python3 -m venv --system-site-packages /opt/venv
    # torch first, from its own index, so that installing the project never resolves another build
    $PIP --no-deps --index-url "$2" "torch==$TORCH_PIN"
    shift 2
    if [ "$#" -gt 0 ]; then $PIP "$@"; fi
    useradd --create-home --uid 1000 wan22
    chmod 1777 /home/wan22  # any uid can use it: local runs use the caller's, OpenShift a random one
    ;;
  deps)
    /opt/venv/bin/python -c "import tomllib; print(*tomllib.load(open('/opt/wan22/pyproject.toml', 'rb'))['project']['dependencies'], sep='\n')" > /tmp/requirements.txt
    $PIP -r /tmp/requirements.txt
    rm /tmp/requirements.txt
    ;;
  project)
    $PIP --no-deps "/opt/wan22${2:+[$2]}"
    /opt/venv/bin/pip check
    ;;
  *) echo "usage: install.sh base|deps|project" >&2; exit 2 ;;
esac

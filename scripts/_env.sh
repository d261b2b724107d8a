# Shared by demo.sh and test.sh: check Java, make .venv if missing, install rstack into it.
# Usage: source scripts/_env.sh "<pip extras, e.g. [dev] or empty>"
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

need_java() {
  if ! command -v java >/dev/null 2>&1; then
    echo "error: Java not found. rstack runs Spark, which needs Java 17 or newer (17 is tested)." >&2
    echo "  Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless" >&2
    echo "  macOS:         brew install openjdk@17" >&2
    exit 2
  fi
  local version major
  version=$(java -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')
  major=${version%%.*}
  if [ -z "$major" ] || [ "$major" -lt 17 ] 2>/dev/null; then
    echo "error: Java $version found; rstack needs Java 17+ (17 is tested; 25 is known to fail)." >&2
    echo "  Debian/Ubuntu: sudo apt-get install -y openjdk-17-jre-headless, then select it with" >&2
    echo "  update-alternatives --config java (or set JAVA_HOME)." >&2
    exit 2
  fi
}

need_java
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "making .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
  rm -f .venv/.rstack-installed
fi
# rstack is installed editable, so only a changed pyproject.toml (or other extras) needs pip again:
# the stamp saves the ~5 s a no-op `pip install` costs on every demo run. Hashed with the venv's
# Python, which every machine here has (sha256sum is not on macOS).
hash=$(.venv/bin/python -c 'import hashlib; print(hashlib.sha256(open("pyproject.toml", "rb").read()).hexdigest())')
stamp="$hash rstack$1"
if ! grep -qxF "$stamp" .venv/.rstack-installed 2>/dev/null; then
  .venv/bin/python -m pip install --quiet --upgrade pip >/dev/null 2>&1 || true
  echo "installing rstack$1 into .venv (log: .venv/pip-install.log)"
  if ! .venv/bin/python -m pip install --quiet -e ".$1" > .venv/pip-install.log 2>&1; then
    tail -n 30 .venv/pip-install.log >&2
    echo "error: pip install failed; full log in .venv/pip-install.log" >&2
    exit 1
  fi
  .venv/bin/python -c "import rstack, ray, raydp, pyspark" || { echo "error: install into .venv failed" >&2; exit 1; }
  # Only stamps of this pyproject.toml stay: going back to an older one must install again.
  { grep -F "$hash " .venv/.rstack-installed 2>/dev/null || true; echo "$stamp"; } > .venv/.rstack-installed.new
  mv .venv/.rstack-installed.new .venv/.rstack-installed
fi
.venv/bin/python -c "import rstack" || { echo "error: rstack is not importable from .venv; delete .venv and run again" >&2; exit 1; }
export PYSPARK_PYTHON="$PWD/.venv/bin/python"

# shellcheck shell=bash
# Sourced by scripts/test and .ci/run (and any script that needs the project installed).
#
# ensure_venv ROOT: make sure a virtualenv with the project installed (editable, extras test+sdk)
# exists -- ROOT/.venv, or $RTMSFLOW_VENV if set -- and put its bin/ first on PATH. The install
# runs on first use and again whenever pyproject.toml changes (a stamp file records its hash).

ensure_venv() {
    local root="$1"
    VENV="${RTMSFLOW_VENV:-$root/.venv}"
    if [[ ! -x "$VENV/bin/python" ]]; then
        local py="" candidate
        for candidate in python3.11 python3.12 python3.13 python3; do
            if command -v "$candidate" >/dev/null 2>&1 &&
                "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
                py="$candidate"
                break
            fi
        done
        if [[ -z "$py" ]]; then
            echo "error: Python 3.11+ is needed (python3.11 or python3 on PATH)" >&2
            return 1
        fi
        echo "creating $VENV with $("$py" --version)" >&2
        "$py" -m venv "$VENV"
    fi
    local stamp="$VENV/.rtmsflow-install" want
    want="$( (sha256sum "$root/pyproject.toml" 2>/dev/null || shasum -a 256 "$root/pyproject.toml") | cut -d' ' -f1)"
    if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
        echo "installing rtmsflow[test,sdk] into $VENV" >&2
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$root[test,sdk]"
        echo "$want" >"$stamp"
    fi
    export PATH="$VENV/bin:$PATH"
}

# The project's virtual environment: `.venv` in this checkout. Sourced by setup.sh, demo.sh, test.sh and
# lab-setup.sh (run from the checkout's root). kit and its dependencies are installed there and nowhere else:
# the interpreter that creates it ($PYTHON, else python3) is never installed into, and an existing kit
# installation elsewhere is left as it is.
#   kit_venv                 create .venv when missing (installing Debian's python3-venv if needed); sets PY
#   kit_venv_install EXTRAS  pip install -e ".[EXTRAS]" into it, skipped when nothing changed since last time

KIT_VENV="${KIT_VENV:-.venv}"
PY="$KIT_VENV/bin/python"

venv_say() { echo "[venv] $*" >&2; }

_venv_sudo() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else return 1
    fi
}

_venv_apt() {
    command -v apt-get >/dev/null 2>&1 || return 1
    venv_say "installing Debian packages: $*"
    _venv_sudo apt-get update -qq && _venv_sudo env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

kit_venv() {
    if [ -x "$PY" ] && "$PY" -c 'import sys; sys.exit(sys.prefix == sys.base_prefix)' 2>/dev/null; then
        return 0
    fi
    local base="${PYTHON:-python3}"
    if ! command -v "$base" >/dev/null 2>&1; then
        [ -z "${PYTHON:-}" ] && _venv_apt python3 python3-venv || true
        command -v "$base" >/dev/null 2>&1 || { venv_say "ERROR: no $base to create $KIT_VENV with (set PYTHON)"; return 1; }
    fi
    if ! "$base" -c 'import sys; sys.exit(sys.version_info < (3, 10))'; then
        venv_say "ERROR: kit needs Python 3.10 or newer; $base is $("$base" -V 2>&1) (set PYTHON to another)"
        return 1
    fi
    rm -rf "$KIT_VENV"
    if ! "$base" -m venv "$KIT_VENV" >/dev/null 2>&1; then
        # Debian ships the venv module (ensurepip) separately.
        rm -rf "$KIT_VENV"
        local ver
        ver="$("$base" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')"
        _venv_apt "python$ver-venv" || _venv_apt python3-venv || true
        if ! "$base" -m venv "$KIT_VENV" >/dev/null 2>&1; then
            rm -rf "$KIT_VENV"
            venv_say "ERROR: $base cannot create a virtual environment: install python3-venv (apt-get install python3-venv) and run again"
            return 1
        fi
    fi
    venv_say "created the project virtual environment $KIT_VENV ($("$PY" -V 2>&1), from $(command -v "$base"))"
}

kit_venv_install() {
    local extras="$1" spec="." stamp="$KIT_VENV/.kit-installed" digest wanted have
    [ -n "$extras" ] && spec=".[$extras]"
    digest="$(sha256sum < pyproject.toml | cut -c1-16)"
    wanted="$(echo "$extras" | tr ',' '\n' | sed '/^$/d' | sort -u | tr '\n' ' ')"
    if [ -f "$stamp" ] && [ "$(head -n 1 "$stamp")" = "$digest" ]; then
        have="$(sed -n 2p "$stamp")"
        local missing=""
        for e in $wanted; do case " $have " in *" $e "*) ;; *) missing="$missing $e" ;; esac; done
        if [ -z "$missing" ] && "$PY" -c 'import kit' 2>/dev/null; then
            venv_say "kit is installed in $KIT_VENV (editable, this checkout)${wanted:+ with [$extras]}"
            return 0
        fi
        wanted="$(printf '%s\n' $wanted $have | sort -u | tr '\n' ' ')"
        spec=".[$(echo $wanted | tr ' ' ',')]"
    fi
    venv_say "pip install -e '$spec' into $KIT_VENV (nothing is installed outside it)"
    "$PY" -m pip install -q --disable-pip-version-check -e "$spec"
    printf '%s\n%s\n' "$digest" "$wanted" > "$stamp"
}

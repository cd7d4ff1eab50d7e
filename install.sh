#!/usr/bin/env bash
# Install hubd, the community-security ward hub, as a hardened systemd service.
#
#   sudo ./install.sh               Raspberry Pi OS (bookworm): a working hub
#   sudo ./install.sh --simulate    any Debian/Ubuntu: mock pins, generated camera
#   sudo ./install.sh --uninstall   remove the program, keep config and data
#   sudo ./install.sh --purge       remove the program, config, data and the hubd user
#
# Re-running it upgrades in place (the store is migrated, the service restarted) and
# changes nothing when nothing changed.  --root DIR installs into a directory tree
# instead of this machine (no apt, no running systemd): for images and for tests.
set -euo pipefail

PROG=install.sh
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=/
SIMULATE=0
ACTION=install
START=1
PYTHON=${HUBD_PYTHON:-/usr/bin/python3}

APP=/opt/hubd
ETC=/etc/hubd
STATE=/var/lib/hubd
UNIT=/etc/systemd/system/hubd.service
LINK=/usr/local/bin/hubd
USER_NAME=hubd
GROUPS_WANTED=(gpio dialout video i2c)
# Lets the hubd user power the machine off: [power] shutdown_command = "systemctl poweroff".
POLKIT_RULE=/etc/polkit-1/rules.d/50-hubd-poweroff.rules

usage() {
    cat <<EOF
Usage: sudo ./$PROG [--simulate] [--root DIR] [--no-start] [--uninstall | --purge]

  --simulate    not a Raspberry Pi: configure mock pins and a generated camera
  --root DIR    install into DIR instead of / (no apt-get, no running systemd)
  --no-start    install and enable, but do not start or restart the service
  --uninstall   remove the program and the service; keep $ETC and $STATE
  --purge       as --uninstall, and remove $ETC, $STATE and the $USER_NAME user
  -h, --help    this text

Environment: HUBD_PYTHON (default /usr/bin/python3) creates the virtualenv.
EOF
}

say() { printf '%s\n' "$*"; }
step() { printf '\n== %s\n' "$*"; }
did() { printf '  + %s\n' "$*"; }
kept() { printf '  = %s\n' "$*"; }
warn() { printf '%s: warning: %s\n' "$PROG" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$PROG" "$1" >&2
    if [[ $# -gt 1 ]]; then printf '  how to fix: %s\n' "$2" >&2; fi
    exit 1
}
on_error() {
    local rc=$? line=$1 cmd=$2
    printf '%s: error: line %s failed (exit %s): %s\n' "$PROG" "$line" "$rc" "$cmd" >&2
    printf '  how to fix: read the message above; the install is safe to run again once fixed.\n' >&2
    exit "$rc"
}
trap 'on_error "$LINENO" "$BASH_COMMAND"' ERR

while [[ $# -gt 0 ]]; do
    case $1 in
        --simulate) SIMULATE=1 ;;
        --root) [[ $# -ge 2 ]] || die "--root needs a directory" "e.g. --root /tmp/hubroot"
                ROOT=$2; shift ;;
        --root=*) ROOT=${1#--root=} ;;
        --no-start) START=0 ;;
        --uninstall) ACTION=uninstall ;;
        --purge) ACTION=purge ;;
        -h|--help) usage; exit 0 ;;
        *) usage >&2; die "unknown option: $1" "see the usage above" ;;
    esac
    shift
done

[[ $EUID -eq 0 ]] || die "this must run as root" "sudo ./$PROG $*"
if [[ $ROOT != / ]]; then
    [[ -d $ROOT ]] || die "--root $ROOT is not a directory" "create it first (mkdir -p $ROOT)"
    ROOT=$(cd "$ROOT" && pwd)
fi
R=${ROOT%/}           # prefix for every path written; empty for the real system
IN_ROOT=0
[[ -n $R ]] && IN_ROOT=1

# systemd is usable only for the real system and only when it is PID 1.
have_systemd() { [[ $IN_ROOT -eq 0 && -d /run/systemd/system ]]; }

# --- users and groups, read from the target's own files (works under --root) -------------

passwd_field() { awk -F: -v u="$1" -v f="$2" '$1 == u { print $f }' "$R/etc/passwd" 2>/dev/null; }
group_exists() { grep -q "^$1:" "$R/etc/group" 2>/dev/null; }
in_group() { grep -Eq "^$1:[^:]*:[^:]*:(.*,)?$USER_NAME(,|$)" "$R/etc/group"; }
root_opt=()
[[ $IN_ROOT -eq 1 ]] && root_opt=(--root "$ROOT")

owner_ids() { printf '%s:%s' "$(passwd_field "$USER_NAME" 3)" "$(passwd_field "$USER_NAME" 4)"; }

# ensure_dir PATH MODE UID:GID — create, or correct mode and owner; say which.
ensure_dir() {
    local path=$1 mode=$2 owner=$3
    if [[ ! -d $R$path ]]; then
        install -d -m "$mode" "$R$path"
        chown "$owner" "$R$path"
        did "created $path ($mode)"
        return
    fi
    ensure_attrs "$path" "$mode" "$owner"
}

ensure_attrs() {
    local path=$1 mode=$2 owner=$3 now
    now=$(stat -c '%a %u:%g' "$R$path")
    if [[ $now != "${mode#0} $owner" ]]; then
        chmod "$mode" "$R$path"
        chown "$owner" "$R$path"
        did "$path: mode/owner $now -> ${mode#0} $owner"
    fi
}

is_pi() { grep -qa "Raspberry Pi" /proc/device-tree/model 2>/dev/null; }

# A fingerprint of the checkout, so an unchanged re-run skips pip entirely.
source_stamp() {
    (cd "$SRC" && find pyproject.toml hubd sensors radio web -type f \
        ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z | xargs -0 sha256sum) |
        sha256sum | cut -d' ' -f1
}

# --- install -------------------------------------------------------------------------------

check_source() {
    local f
    for f in pyproject.toml hubd/example.toml systemd/hubd.service; do
        [[ -f $SRC/$f ]] || die "$SRC/$f is missing: this is not a complete hubd checkout" \
            "run install.sh from the top of a full checkout (git clone, or unpack the release tarball)"
    done
    [[ -x $PYTHON ]] || die "no Python at $PYTHON" "apt-get install python3 (or set HUBD_PYTHON)"
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' ||
        die "hubd needs Python 3.11 or newer; $PYTHON is $("$PYTHON" -V 2>&1)" \
            "use Raspberry Pi OS / Debian bookworm or newer"
    if ! is_pi && [[ $SIMULATE -eq 0 ]]; then
        die "this is not a Raspberry Pi" \
            "run with --simulate for a simulated hub (mock pins, generated camera snapshots)"
    fi
}

install_packages() {
    step "OS packages"
    local pkgs=(python3-venv) missing=() p
    if is_pi && [[ $SIMULATE -eq 0 ]]; then pkgs+=(python3-picamera2 python3-lgpio); fi
    if [[ $IN_ROOT -eq 1 ]]; then
        kept "--root: not installing OS packages (${pkgs[*]}); the target image must have them"
        return
    fi
    for p in "${pkgs[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    if [[ ${#missing[@]} -eq 0 ]]; then
        kept "installed: ${pkgs[*]}"
        return
    fi
    apt-get update -q || die "apt-get update failed" "check the network and /etc/apt/sources.list, then re-run"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" ||
        die "apt-get could not install ${missing[*]}" "run: sudo apt-get install ${missing[*]} and read its error"
    did "installed ${missing[*]}"
}

create_user() {
    step "system user $USER_NAME"
    [[ -f $R/etc/passwd && -f $R/etc/group ]] ||
        die "$R/etc/passwd or $R/etc/group is missing" "--root must point at a Debian root file system"
    if [[ -z $(passwd_field "$USER_NAME" 1) ]]; then
        useradd "${root_opt[@]}" --system --user-group --home-dir "$STATE" --no-create-home \
            --shell /usr/sbin/nologin --comment "hubd ward hub" "$USER_NAME" ||
            die "useradd could not create the user $USER_NAME" "see the message above"
        did "created user $USER_NAME"
    else
        kept "user $USER_NAME exists"
    fi
    local g
    for g in "${GROUPS_WANTED[@]}"; do
        if ! group_exists "$g"; then
            if [[ $g == gpio && $SIMULATE -eq 0 ]]; then
                warn "no group gpio: the daemon may not reach /dev/gpiochip* (is this Raspberry Pi OS?)"
            fi
            continue
        fi
        if in_group "$g"; then
            kept "in group $g"
        else
            usermod "${root_opt[@]}" -a -G "$g" "$USER_NAME"
            did "added to group $g"
        fi
    done
}

install_program() {
    step "program in $APP"
    local stamp old=""
    stamp=$(source_stamp)
    if [[ -x $R$APP/bin/python ]] && ! "$R$APP/bin/python" -c 'import sys' 2>/dev/null; then
        warn "the virtualenv in $APP is broken (Python upgraded?): recreating it"
        rm -rf "$R$APP"
    fi
    if [[ ! -x $R$APP/bin/python ]]; then
        mkdir -p "$(dirname "$R$APP")"
        "$PYTHON" -m venv --system-site-packages "$R$APP" ||
            die "could not create the virtualenv $APP" "apt-get install python3-venv, then re-run"
        did "created virtualenv $APP (with system site packages, for picamera2)"
    fi
    [[ -f $R$APP/.hubd-source ]] && old=$(<"$R$APP/.hubd-source")
    if [[ $old == "$stamp" ]]; then
        kept "hubd $("$R$APP/bin/hubd" --version 2>/dev/null | cut -d' ' -f2) is up to date"
        PROGRAM_CHANGED=0
    else
        "$R$APP/bin/pip" install --disable-pip-version-check --no-input -q --upgrade "$SRC" ||
            die "pip could not install hubd into $APP" \
                "check network access to PyPI (or a local mirror), then run $PROG again"
        printf '%s\n' "$stamp" >"$R$APP/.hubd-source"
        did "installed $("$R$APP/bin/hubd" --version)"
        PROGRAM_CHANGED=1
    fi
    if [[ $(readlink "$R$LINK" 2>/dev/null || true) != "$APP/bin/hubd" ]]; then
        mkdir -p "$(dirname "$R$LINK")"
        ln -sfn "$APP/bin/hubd" "$R$LINK"
        did "linked $LINK -> $APP/bin/hubd"
    fi
}

install_config() {
    step "configuration in $ETC"
    local ids conf=$ETC/hub.toml f
    ids=$(owner_ids)
    ensure_dir "$ETC" 0750 "0:${ids#*:}"
    ensure_dir "$ETC/secrets" 0750 "0:${ids#*:}"
    ensure_dir "$STATE" 0700 "$ids"
    if [[ -e $R$conf ]]; then
        kept "$conf exists (never overwritten)"
    else
        install -m 0640 -o 0 -g "${ids#*:}" "$SRC/hubd/example.toml" "$R$conf"
        # The CLI (run from a login shell) must find the socket systemd's RuntimeDirectory holds.
        sed -i -E 's|^# *runtime_dir *= *"/run/hubd".*$|runtime_dir = "/run/hubd"       # control socket (systemd RuntimeDirectory=hubd)|' "$R$conf"
        if [[ $SIMULATE -eq 1 ]]; then
            sed -i -E -e 's|^pin_factory *= *"[a-z]+"|pin_factory = "mock"|' \
                      -e 's|^backend *= *"picamera2"|backend = "generated"|' "$R$conf"
            grep -q '^pin_factory = "mock"' "$R$conf" ||
                warn "could not set pin_factory = \"mock\" in $conf: set it by hand for a simulated hub"
        fi
        did "created $conf from the annotated example$([[ $SIMULATE -eq 1 ]] && echo ' (simulated hardware)')"
    fi
    ensure_attrs "$conf" 0640 "0:${ids#*:}"
    # Secrets live in their own files, readable by the daemon only.
    for f in "$R$ETC"/secrets/*; do
        [[ -f $f ]] || continue
        ensure_attrs "${f#"$R"}" 0600 "$ids"
    done
    if ! "$R$APP/bin/hubd" check-config "$R$conf" >/dev/null 2>"$R$APP/.check-config.err"; then
        cat "$R$APP/.check-config.err" >&2
        die "$conf is not valid for this version of hubd (errors above)" \
            "edit $conf, check it with: hubd check-config $conf, then run $PROG again"
    fi
    rm -f "$R$APP/.check-config.err"
    kept "$conf is valid"
}

signing_key() {
    step "signing key"
    local key=$STATE/signing.key ids public
    ids=$(owner_ids)
    if [[ -e $R$key ]]; then
        kept "$key exists (a hub's identity is never replaced)"
    else
        "$R$APP/bin/python" -c 'import sys; from hubd.identity import init_key; init_key(sys.argv[1])' "$R$key" ||
            die "could not make the signing key $key" "check that $STATE is writable, then run $PROG again"
        chown "$ids" "$R$key"
        did "made $key (0600)"
    fi
    ensure_attrs "$key" 0600 "$ids"
    public=$("$R$APP/bin/python" -c 'import sys; from hubd import contract
print(contract.public_key_text(contract.load_private_key(sys.argv[1])))' "$R$key") ||
        die "cannot read the signing key $key" "check its owner ($USER_NAME) and mode (0600)"
    kept "public key: $public  (enrol it at the centre and in the neighbours' [trust] hubs)"
}

migrate_store() {
    step "store"
    if [[ $IN_ROOT -eq 1 ]]; then
        kept "--root: the store is created and migrated by the daemon on first start"
        return
    fi
    local db
    db=$("$APP/bin/python" -c 'import sys; from hubd.config import load_config
print(load_config(sys.argv[1], check_files=False).store_path)' "$ETC/hub.toml")
    if [[ ! -f $db ]]; then
        kept "no store yet: the daemon creates $db on first start"
        return
    fi
    local migrate='import sys; from hubd.store import Store, SCHEMA_VERSION
s = Store(sys.argv[1]); v = s.version; s.close(); print(f"schema version {v} of {SCHEMA_VERSION}")'
    if have_systemd && systemctl is-active -q hubd && [[ $PROGRAM_CHANGED -eq 1 ]]; then
        systemctl stop hubd
        did "stopped hubd for the upgrade"
    fi
    local out
    out=$(runuser -u "$USER_NAME" -- "$APP/bin/python" -c "$migrate" "$db" 2>&1) ||
        die "could not open or migrate the store $db: $out" \
            "if it was written by a newer hubd, install that version again; otherwise move the file aside"
    kept "$db: $out"
}

install_polkit_rule() {
    step "power-down permission"
    local rule
    rule=$(cat <<EOF
// Installed by hubd's install.sh: the $USER_NAME user may power the machine off, as hubd does
// when its battery reaches the critical level ([power] shutdown_command = "systemctl poweroff").
polkit.addRule(function (action, subject) {
    if (subject.user == "$USER_NAME" &&
        (action.id == "org.freedesktop.login1.power-off" ||
         action.id == "org.freedesktop.login1.power-off-multiple-sessions" ||
         action.id == "org.freedesktop.login1.power-off-ignore-inhibit")) {
        return polkit.Result.YES;
    }
});
EOF
)
    if [[ -f $R$POLKIT_RULE && $(<"$R$POLKIT_RULE") == "$rule" ]]; then
        kept "$POLKIT_RULE is up to date"
    else
        mkdir -p "$(dirname "$R$POLKIT_RULE")"
        printf '%s\n' "$rule" >"$R$POLKIT_RULE"
        chmod 0644 "$R$POLKIT_RULE"
        did "installed $POLKIT_RULE ($USER_NAME may power the machine off)"
    fi
}

install_unit() {
    step "systemd service"
    UNIT_CHANGED=0
    if cmp -s "$SRC/systemd/hubd.service" "$R$UNIT"; then
        kept "$UNIT is up to date"
    else
        install -D -m 0644 "$SRC/systemd/hubd.service" "$R$UNIT"
        did "installed $UNIT"
        UNIT_CHANGED=1
    fi
    if [[ $IN_ROOT -eq 1 ]]; then
        if [[ -L $R/etc/systemd/system/multi-user.target.wants/hubd.service ]]; then
            kept "enabled"
        else
            systemctl --root="$ROOT" enable hubd.service 2>/dev/null
            did "enabled (starts at boot)"
        fi
        return
    fi
    if ! have_systemd; then
        warn "systemd is not running here: the service is installed but not started; run: $LINK run"
        return
    fi
    [[ $UNIT_CHANGED -eq 1 ]] && systemctl daemon-reload
    if systemctl is-enabled -q hubd 2>/dev/null; then kept "enabled"; else systemctl enable -q hubd; did "enabled"; fi
    [[ $START -eq 1 ]] || { kept "--no-start: not starting"; return; }
    if systemctl is-active -q hubd; then
        if [[ $PROGRAM_CHANGED -eq 1 || $UNIT_CHANGED -eq 1 ]]; then
            systemctl restart hubd
            did "restarted hubd"
        else
            kept "hubd is running"
        fi
    else
        systemctl start hubd || true
        did "started hubd"
    fi

    for _ in $(seq 1 60); do
        systemctl is-active -q hubd && break
        sleep 1
    done
    if ! systemctl is-active -q hubd; then
        journalctl -u hubd -n 30 --no-pager >&2 || true
        die "hubd did not start (its last log lines are above)" \
            "run: hubd doctor   — it checks the config, pins, radio, broker, clock and disk"
    fi
    kept "hubd is active"
}

next_steps() {
    local port ip
    port=$("$R$APP/bin/python" -c 'import sys; from hubd.config import load_config
print(load_config(sys.argv[1], check_files=False).web.port)' "$R$ETC/hub.toml" 2>/dev/null || echo 8080)
    ip=$(hostname -I 2>/dev/null | cut -d' ' -f1 || true)
    [[ -n $ip ]] || ip=THIS-HUB-ADDRESS
    cat <<EOF

hubd is installed.  Next steps:
  1. Edit $ETC/hub.toml: ward, hub id, name, pins (check it: hubd check-config $ETC/hub.toml).
     Secrets (MQTT password, mesh network key) go in $ETC/secrets/, mode 0600, owner $USER_NAME.
  2. Enrol this hub's public key (hubd keys show) at the centre and in its neighbours' [trust] hubs;
     put the centre's and the neighbours' keys in [trust] of $ETC/hub.toml.
  3. Create a manager account for the page:
       sudo -u $USER_NAME $APP/bin/hubd user add NAME --role manager
  4. Open the page: http://$ip:$port/
  5. Check the installation: sudo hubd doctor     Status: hubd status     Log: journalctl -u hubd
EOF
}

do_install() {
    say "Installing hubd from $SRC into ${ROOT}$([[ $SIMULATE -eq 1 ]] && echo ' (simulated hardware)')"
    PROGRAM_CHANGED=0
    check_source
    install_packages
    create_user
    install_program
    install_config
    signing_key
    migrate_store
    install_polkit_rule
    install_unit
    next_steps
}

# --- uninstall -----------------------------------------------------------------------------

do_uninstall() {
    say "Removing hubd from ${ROOT}$([[ $ACTION == purge ]] && echo ' (purge: data too)')"
    step "service and program"
    if have_systemd && systemctl list-unit-files hubd.service >/dev/null 2>&1; then
        systemctl disable -q --now hubd 2>/dev/null || true
    elif [[ $IN_ROOT -eq 1 && -e $R$UNIT ]]; then
        systemctl --root="$ROOT" disable hubd.service 2>/dev/null || true
    fi
    local p
    for p in "$UNIT" "$LINK" "$APP" "$POLKIT_RULE"; do
        if [[ -e $R$p || -L $R$p ]]; then rm -rf -- "$R$p"; did "removed $p"; fi
    done
    rm -f "$R/etc/systemd/system/multi-user.target.wants/hubd.service"
    have_systemd && systemctl daemon-reload
    if [[ $ACTION == uninstall ]]; then
        kept "kept $ETC (config, secrets) and $STATE (alerts, events, accounts); --purge removes them"
        return
    fi
    step "data and user"
    for p in "$ETC" "$STATE"; do
        if [[ -e $R$p ]]; then rm -rf "$R$p"; did "removed $p"; fi
    done
    if [[ -n $(passwd_field "$USER_NAME" 1) ]]; then
        userdel "${root_opt[@]}" "$USER_NAME"
        did "removed user $USER_NAME"
    fi
}

case $ACTION in
    install) do_install ;;
    uninstall|purge) do_uninstall ;;
esac

#!/bin/sh
# keepalived notify script: tell swcmp this node's role, then wake `swcmp serve`.
#
# In keepalived.conf (vrrp_instance or vrrp_sync_group):
#   notify "/usr/local/sbin/swcmp-keepalived-notify.sh"
#   notify "/usr/local/sbin/swcmp-keepalived-notify.sh -f /run/swcmp/role -p /run/swcmp/serve.pid"
# keepalived appends TYPE NAME STATE [PRIORITY]; STATE is MASTER, BACKUP, FAULT or STOP.
#
# -f ROLE_FILE  where the role goes (default /run/swcmp/role; [ha] role_file in swcmp.toml)
# -p PID_FILE   wake the serve process with this pid file (`swcmp serve --pid-file`) by
#               SIGHUP; without it: `systemctl reload swcmp.service`.
# swcmp renews only while the file says MASTER; anything else, or no file, is standby.
set -u
usage() {
  echo "usage: $0 [-f ROLE_FILE] [-p PID_FILE] TYPE NAME STATE [PRIORITY]" >&2
  exit 2
}
role_file=/run/swcmp/role
pid_file=
while getopts f:p: opt; do
  case $opt in
    f) role_file=$OPTARG ;;
    p) pid_file=$OPTARG ;;
    *) usage ;;
  esac
done
shift $((OPTIND - 1))
[ $# -ge 3 ] || usage
# Only letters reach the file (swcmp reads its first word).
state=$(printf '%s' "$3" | tr -cd 'A-Za-z')
[ -n "$state" ] || state=UNKNOWN

umask 022
mkdir -p "$(dirname "$role_file")" || exit 1
tmp="$role_file.tmp.$$"
# Write a new file and rename it over the old one: swcmp never reads half a role.
printf '%s\n' "$state" > "$tmp" && mv -f "$tmp" "$role_file" || { rm -f "$tmp"; exit 1; }

# Wake the service, so that a node turning MASTER renews what is due at once.
if [ -n "$pid_file" ]; then
  pid=$(cat "$pid_file" 2>/dev/null) && [ -n "$pid" ] && kill -HUP "$pid" 2>/dev/null
elif command -v systemctl >/dev/null 2>&1; then
  systemctl reload swcmp.service 2>/dev/null
fi
exit 0

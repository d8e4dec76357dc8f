#!/bin/sh
# keepalived notify script: tell swcmp this node's role.
# In keepalived.conf:  notify /usr/local/sbin/swcmp-keepalived-notify.sh
# keepalived calls it as: notify.sh TYPE NAME STATE PRIORITY
mkdir -p /run/swcmp
printf '%s\n' "$3" > /run/swcmp/role.tmp && mv /run/swcmp/role.tmp /run/swcmp/role
# Wake the service so that a node turning MASTER renews what is due at once.
systemctl reload swcmp.service 2>/dev/null || true

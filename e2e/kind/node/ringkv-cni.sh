#!/bin/sh
# Pod network for the ringkv kind nodes, in place of kind's kindnetd (not published as
# a Go module): writes this node's CNI config (ptp veths, host-local IPAM over the
# node's spec.podCIDR) and keeps a route to every other node's podCIDR through that
# node's InternalIP on the shared container network. Runs as a hostNetwork DaemonSet.
# Unlike kindnetd it neither enforces NetworkPolicies nor masquerades pod traffic that
# leaves the cluster (nothing here needs to).
set -eu
: "${NODE_NAME:?}"
conf=/etc/cni/net.d/10-ringkv.conflist
sysctl -qw net.ipv4.ip_forward=1
while :; do
    if kubectl get nodes -o jsonpath='{range .items[*]}{.metadata.name} {.spec.podCIDR} {.status.addresses[?(@.type=="InternalIP")].address}{"\n"}{end}' > /tmp/nodes.new; then
        while read -r name cidr ip; do
            [ -n "$cidr" ] && [ -n "$ip" ] || continue
            if [ "$name" = "$NODE_NAME" ]; then
                cat > "$conf.tmp" <<JSON
{
  "cniVersion": "0.4.0",
  "name": "ringkv",
  "plugins": [
    {"type": "ptp", "ipMasq": false, "mtu": 1500,
     "ipam": {"type": "host-local", "dataDir": "/run/cni-ipam-state",
              "routes": [{"dst": "0.0.0.0/0"}], "ranges": [[{"subnet": "$cidr"}]]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
JSON
                if ! cmp -s "$conf.tmp" "$conf"; then mv "$conf.tmp" "$conf"; echo "wrote $conf for $cidr"; else rm -f "$conf.tmp"; fi
            else
                before="$(ip route show "$cidr")"
                ip route replace "$cidr" via "$ip"
                [ "$before" = "$(ip route show "$cidr")" ] || echo "route $cidr via $ip ($name)"
            fi
        done < /tmp/nodes.new
    fi
    sleep 5
done

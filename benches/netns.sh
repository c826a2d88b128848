# Shared by the benchmark scripts (sourced, not run): two network
# namespaces joined by a veth pair, their removal, and the end of a run.

# ns_remove NS...: kills what runs in each namespace and deletes it.
ns_remove() {
  local ns pid
  for ns in "$@"; do
    if ip netns list | grep -qw "$ns"; then
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill "$pid" 2>/dev/null || true; done
      sleep 0.3
      for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
      ip netns del "$ns" 2>/dev/null || true
    fi
  done
}

# ns_pair NS_A NS_B VETH_PREFIX ADDR_A/LEN ADDR_B/LEN: creates both
# namespaces (removing leftovers first) joined by VETH_PREFIX{a,b}.
ns_pair() {
  local a=$1 b=$2 v=$3
  ns_remove "$a" "$b"
  ip netns add "$a"
  ip netns add "$b"
  ip link add "${v}a" netns "$a" type veth peer name "${v}b" netns "$b"
  ip -n "$a" addr add "$4" dev "${v}a"
  ip -n "$b" addr add "$5" dev "${v}b"
  ip -n "$a" link set lo up
  ip -n "$b" link set lo up
  ip -n "$a" link set "${v}a" up
  ip -n "$b" link set "${v}b" up
}

# bench_finish KEEP WORK NS...: removes the namespaces, and the working
# directory WORK unless KEEP is set (then says where the logs are).
bench_finish() {
  local keep=$1 work=$2
  shift 2
  ns_remove "$@"
  if [ -n "$keep" ]; then log "logs kept in $work"; else rm -rf "$work"; fi
}

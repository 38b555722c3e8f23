# regedge: prepare the node for a non-root agent. Runs as root in a
# privileged init container (busybox sh) whose BPFFS mount has Bidirectional
# propagation, so a bpffs mounted here is the node's and outlives the pod.
# Idempotent: every pod start (and a surge pod beside a running one) runs it.
set -eu
: "${BPFFS:=/sys/fs/bpf}" "${STATE_DIR:=/var/lib/regedge}" "${AGENT_UID:=65532}" "${AGENT_GID:=65532}"
# 0xcafe4a11 is BPF_FS_MAGIC: a bpffs is already mounted there.
if [ "$(stat -f -c %t "$BPFFS")" != cafe4a11 ]; then
  mount -t bpf bpf "$BPFFS"
  echo "regedge: mounted bpffs at $BPFFS"
fi
if [ "$(stat -f -c %t "$BPFFS")" != cafe4a11 ]; then
  echo "regedge: $BPFFS is still not a bpffs after mounting" >&2
  exit 1
fi
# The agent must be able to reach BPFFS/regedge by name: search permission
# only (o+x), nothing in BPFFS becomes listable or readable by others.
chmod o+x "$BPFFS"
# Its own directory, and whatever an earlier (root) agent pinned there.
mkdir -p "$BPFFS/regedge"
chown -R "$AGENT_UID:$AGENT_GID" "$BPFFS/regedge"
chmod 0700 "$BPFFS/regedge"
# The state file's directory on the node.
mkdir -p "$STATE_DIR"
chown -R "$AGENT_UID:$AGENT_GID" "$STATE_DIR"
chmod 0700 "$STATE_DIR"
echo "regedge: $BPFFS/regedge and $STATE_DIR belong to $AGENT_UID:$AGENT_GID"

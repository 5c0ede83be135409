#!/usr/bin/env bash
# Background UDP load at line rate from the kernel's packet generator
# (/proc/net/pktgen, the pktgen module), for load tests on real gateways:
# it shows that traffic gatekeeper does not gate passes at full speed while
# a SYN flood (cargo xtask loadtest's live-frames generator, or any other)
# hits port 25.
#
# Run it on the sending host, as root, naming the interface toward the
# gateway and the gateway's address and MAC address:
#
#   scripts/pktgen-udp.sh -i eth1 -d 192.0.2.1 -m 02:00:00:00:00:01 -t 30
#
# It sends UDP datagrams to the discard port (9) from random source ports,
# one kernel thread per CPU given with -n, for -t seconds, then prints one
# line: `pktgen-udp: sent N packets (P pps) ...`. Interrupted or not, it
# stops pktgen and removes the devices it added to pktgen's threads.
#
# Exit status: 0 when it ran, 2 for a usage error, 3 when the kernel has no
# pktgen (`modprobe pktgen` loads it where the kernel was built with it).

set -euo pipefail

readonly PGDIR=/proc/net/pktgen
readonly PGCTRL="$PGDIR/pgctrl"

usage() {
	cat >&2 <<-EOF
		usage: $0 -i DEV -d DST_IP -m DST_MAC [-s SRC_IP] [-p PORT] [-l BYTES]
		          [-t SECONDS] [-n THREADS] [-c CLONES]
		  -i DEV      interface to send from
		  -d DST_IP   destination IPv4 address (the gateway's)
		  -m DST_MAC  destination MAC address (the gateway's, or the next hop's)
		  -s SRC_IP   source IPv4 address (default: the first on DEV)
		  -p PORT     UDP destination port (default 9, discard)
		  -l BYTES    frame size without the FCS (default 60, the minimum)
		  -t SECONDS  how long to send (default 10)
		  -n THREADS  pktgen threads, one per CPU from CPU 0 (default 1)
		  -c CLONES   times each skb is sent before a new one is built
		              (default 0; real NICs reach line rate with 1000, veth
		              refuses anything but 0)
	EOF
	exit 2
}

dev="" dst="" dst_mac="" src="" port=9 size=60 seconds=10 threads=1 clones=0
while getopts "i:d:m:s:p:l:t:n:c:h" option; do
	case "$option" in
	i) dev=$OPTARG ;;
	d) dst=$OPTARG ;;
	m) dst_mac=$OPTARG ;;
	s) src=$OPTARG ;;
	p) port=$OPTARG ;;
	l) size=$OPTARG ;;
	t) seconds=$OPTARG ;;
	n) threads=$OPTARG ;;
	c) clones=$OPTARG ;;
	*) usage ;;
	esac
done
[[ -n $dev && -n $dst && -n $dst_mac ]] || usage
for number in "$port" "$size" "$seconds" "$threads" "$clones"; do
	[[ $number =~ ^[0-9]+$ ]] || usage
done
((threads >= 1)) || usage

if [[ ! -e $PGCTRL ]]; then
	echo "pktgen-udp: $PGDIR does not exist: this kernel has no pktgen loaded" \
		"(modprobe pktgen, where the kernel was built with CONFIG_NET_PKTGEN)" >&2
	exit 3
fi
if [[ -z $src ]]; then
	src=$(ip -4 -o addr show dev "$dev" | awk '{ split($4, a, "/"); print a[1]; exit }')
	[[ -n $src ]] || {
		echo "pktgen-udp: $dev has no IPv4 address; give one with -s" >&2
		exit 2
	}
fi

# Writes a command to a pktgen file and fails, quoting pktgen, unless the
# file's Result line says OK afterwards.
pg() {
	local file=$1
	shift
	echo "$*" >"$file"
	if ! grep -q '^Result: OK' "$file"; then
		echo "pktgen-udp: \`$*\` into $file: $(grep '^Result:' "$file")" >&2
		return 1
	fi
}

# pktgen names a device it sends from several threads DEV@N.
device_of() {
	echo "$dev@$1"
}

starter=""
cleanup() {
	echo stop >"$PGCTRL" 2>/dev/null || true
	if [[ -n $starter ]]; then
		wait "$starter" 2>/dev/null || true
	fi
	local thread
	for ((thread = 0; thread < threads; thread++)); do
		echo rem_device_all >"$PGDIR/kpktgend_$thread" 2>/dev/null || true
	done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

for ((thread = 0; thread < threads; thread++)); do
	control="$PGDIR/kpktgend_$thread"
	[[ -e $control ]] || {
		echo "pktgen-udp: no pktgen thread for CPU $thread ($control)" >&2
		exit 2
	}
	pg "$control" rem_device_all
	pg "$control" "add_device $(device_of "$thread")"

	file="$PGDIR/$(device_of "$thread")"
	pg "$file" "count 0"
	pg "$file" "clone_skb $clones"
	pg "$file" "pkt_size $size"
	pg "$file" "delay 0"
	pg "$file" "dst $dst"
	pg "$file" "dst_mac $dst_mac"
	pg "$file" "src_min $src"
	pg "$file" "src_max $src"
	pg "$file" "udp_dst_min $port"
	pg "$file" "udp_dst_max $port"
	pg "$file" "udp_src_min 1024"
	pg "$file" "udp_src_max 65535"
	pg "$file" "flag UDPSRC_RND"
done

# Writing start returns only when pktgen stops: in the background, stopped
# by cleanup after the given time.
echo start >"$PGCTRL" &
starter=$!
# In the background too, so that a signal is handled at once.
sleep "$seconds" &
wait $!
echo stop >"$PGCTRL"
wait "$starter" || true
starter=""

sent=0
for ((thread = 0; thread < threads; thread++)); do
	file="$PGDIR/$(device_of "$thread")"
	count=$(awk '/pkts-sofar:/ { print $2; exit }' "$file")
	sent=$((sent + ${count:-0}))
done
echo "pktgen-udp: sent $sent packets ($((sent / (seconds > 0 ? seconds : 1))) pps)" \
	"from $src to $dst:$port via $dev in $seconds s, $threads thread(s)"

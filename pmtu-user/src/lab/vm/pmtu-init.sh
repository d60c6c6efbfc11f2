#!/bin/sh
# pmtu's guest init: REMOTE's interface, routes and services, then READY on the console.
export PATH=/bin:/usr/sbin
fail() {
    echo "pmtu-init: FAILED: $*"
    poweroff -f
    exit 1
}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp

for word in $(cat /proc/cmdline); do
    case "$word" in
        pmtu.mac=*) MAC=${word#*=} ;;
        pmtu.addr=*) ADDR=${word#*=} ;;
        pmtu.addr6=*) ADDR6=${word#*=} ;;
        pmtu.via=*) VIA=${word#*=} ;;
        pmtu.via6=*) VIA6=${word#*=} ;;
        pmtu.viamac=*) VIAMAC=${word#*=} ;;
        pmtu.net=*) NET=${word#*=} ;;
        pmtu.net6=*) NET6=${word#*=} ;;
    esac
done
for v in MAC ADDR ADDR6 VIA VIA6 VIAMAC NET NET6; do
    eval "[ -n \"\$$v\" ]" || fail "pmtu.$(echo $v | tr A-Z a-z)= is missing from the kernel command line"
done

if [ -f /etc/pmtu/modules ]; then
    while read -r module; do
        out=$(insmod "$module" 2>&1) || fail "insmod ${module##*/}: $out"
    done < /etc/pmtu/modules
fi

DEV=
for try in $(seq 1 100); do
    for d in /sys/class/net/*; do
        [ "$(cat "$d/address" 2>/dev/null)" = "$MAC" ] && DEV=${d##*/}
    done
    [ -n "$DEV" ] && break
    sleep 0.02
done
[ -n "$DEV" ] || fail "no virtio_net: no interface with MAC $MAC appeared (interfaces: $(ls /sys/class/net | tr '\n' ' ')); the kernel needs virtio_pci and virtio_net, built in or as modules (--modules DIR)"

for conf in all default "$DEV"; do
    echo 0 > "/proc/sys/net/ipv6/conf/$conf/accept_dad"
done
# One ip for all of it (each program started costs dearly in an emulated guest). LOCAL is
# REMOTE's IPv6 router, as a router advertisement would say: Linux drops the path MTUs learned
# through a gateway not known as a router at its route garbage collection.
out=$(ip -batch - 2>&1 <<EOF
link set lo up
link set $DEV up
addr add $ADDR dev $DEV
addr add $ADDR6 dev $DEV nodad
route add $NET via $VIA
route add $NET6 via $VIA6
neigh replace $VIA6 lladdr $VIAMAC dev $DEV router nud permanent
EOF
) || fail "configuring $DEV ($ADDR, $ADDR6, routes to $NET and $NET6, router $VIA6): $(echo "$out" | tr "\n" " ")"

inetd -R 1000000 /etc/inetd.conf || fail "inetd did not start"
mkdir -p /run/sshd
# -r: no re-exec of sshd for each connection (a second start of a large program under TCG);
# an sshd without the flag starts without it.
/usr/sbin/sshd -r -E /run/sshd.log 2>/dev/null || /usr/sbin/sshd -E /run/sshd.log ||
    fail "sshd did not start: $(cat /run/sshd.log)"

# Listening sockets: local port (hex) and state (0A: TCP LISTEN, 07: UDP bound).
listens() {
    grep -q "^ *[0-9]*: [0-9A-F]*:$2 [0-9A-F]*:[0-9A-F]* $3 " "/proc/net/$1"
}
for check in "tcp 0013 0A chargen" "tcp6 0013 0A chargen(IPv6)" "udp 0007 07 echo" \
             "udp6 0007 07 echo(IPv6)" "tcp 0016 0A sshd"; do
    set -- $check
    n=0
    until listens "$1" "$2" "$3"; do
        n=$((n + 1))
        [ $n -le 500 ] || fail "$4 is not listening after 10 s"
        sleep 0.02
    done
done
echo "pmtu-init: READY $(uname -r)"

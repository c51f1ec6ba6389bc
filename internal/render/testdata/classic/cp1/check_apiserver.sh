#!/bin/sh
# /etc/keepalived/check_apiserver.sh
# keepalived's health check for cp1, rendered by haplane: the kubeadm HA
# guide's script. It fails when the load balancer's frontend does not answer
# here and, while this host holds the VIP, when it does not answer on the VIP.
errorExit() {
    echo "*** $*" 1>&2
    exit 1
}

curl --silent --max-time 2 --insecure https://localhost:8443/ -o /dev/null || errorExit "Error GET https://localhost:8443/"
if ip addr | grep -qF " 10.77.0.100/"; then
    curl --silent --max-time 2 --insecure https://10.77.0.100:8443/ -o /dev/null || errorExit "Error GET https://10.77.0.100:8443/"
fi

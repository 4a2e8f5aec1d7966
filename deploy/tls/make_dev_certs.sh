#!/usr/bin/env bash
# A private CA, a server certificate and a client certificate for trying TLS between the
# processes (and for the tests). For production, use certificates from your own PKI.
#   deploy/tls/make_dev_certs.sh DIR [HOSTNAME]
# writes DIR/{ca.pem, server.pem, server.key, client.pem, client.key}; the server
# certificate is valid for HOSTNAME (default localhost) and 127.0.0.1, for 30 days.
set -euo pipefail
dir=${1:?usage: make_dev_certs.sh DIR [HOSTNAME]}
host=${2:-localhost}
mkdir -p "$dir"
cd "$dir"
umask 077
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=moe-offload-dev-ca \
  -keyout ca.key -out ca.pem 2>/dev/null
printf 'subjectAltName=DNS:%s,IP:127.0.0.1\n' "$host" > san.cnf
for name in server client; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=moe-offload-$name" \
    -keyout "$name.key" -out "$name.csr" 2>/dev/null
  openssl x509 -req -in "$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
    -extfile san.cnf -out "$name.pem" 2>/dev/null
  rm "$name.csr"
done
rm -f san.cnf ca.srl
echo "wrote $dir/{ca.pem,server.pem,server.key,client.pem,client.key} for $host"

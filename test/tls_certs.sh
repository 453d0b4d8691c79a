#!/usr/bin/env bash
# Throwaway TLS material for the TLS tests (test/test_tls.c, spec/tls_spec.lua),
# made with the openssl command in DIR, valid for two days, no network:
#   ca.crt          the CA the tests trust (ca.key signs the rest)
#   other_ca.crt    a CA that signed nothing the servers present
#   server.crt/key  CN localhost, SAN DNS:localhost, IP:127.0.0.1, IP:::1
#   wrong.crt/key   signed by the CA, for the name wrong.example only
#   stranger.crt/key  for localhost, signed by other_ca (an untrusted chain)
#   client.crt/key  a client certificate signed by the CA
# EC P-256 keys: quick to make. The same approach as spec/support/pg_server.sh.
#   tls_certs.sh DIR
set -euo pipefail
# Sanitizer runs preload libasan into the caller; openssl must not inherit it.
unset LD_PRELOAD
d=${1:?usage: tls_certs.sh DIR}
mkdir -p "$d"
cat >"$d/openssl.cnf" <<'CNF'
[req]
distinguished_name = dn
prompt = no
[dn]
CN = loom test
[ca]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1, IP:::1
authorityKeyIdentifier = keyid
[wrong]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:wrong.example
authorityKeyIdentifier = keyid
[client]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
authorityKeyIdentifier = keyid
CNF
ec=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes)
ca() { # ca NAME CN
  openssl req -config "$d/openssl.cnf" -x509 "${ec[@]}" -days 2 -subj "/CN=$2" \
    -extensions ca -keyout "$d/$1.key" -out "$d/$1.crt" 2>/dev/null
}
leaf() { # leaf NAME CN EXTENSIONS CA
  openssl req -config "$d/openssl.cnf" -new "${ec[@]}" -subj "/CN=$2" \
    -keyout "$d/$1.key" -out "$d/$1.csr" 2>/dev/null
  openssl x509 -req -in "$d/$1.csr" -CA "$d/$4.crt" -CAkey "$d/$4.key" -CAcreateserial \
    -days 2 -extfile "$d/openssl.cnf" -extensions "$3" -out "$d/$1.crt" 2>/dev/null
  rm -f "$d/$1.csr"
}
ca ca "loom test CA"
ca other_ca "loom other CA"
leaf server localhost server ca
leaf wrong wrong.example wrong ca
leaf stranger localhost server other_ca
leaf client "loom client" client ca

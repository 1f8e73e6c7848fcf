#!/usr/bin/env bash
# The compose stack's local CA and the server certificates it signs (run by up.sh):
#
#   deploy/compose/tls.sh DIR
#
#   DIR/ca.pem, DIR/ca.key                the stack's CA (given to the Splunk alert action as
#                                          param.ca_bundle and to the diagnoser as
#                                          diagnoser.splunk.ca_file)
#   DIR/receiver-tls.crt, .key             the alert receiver's TLS door (receiver-tls, nginx)
#   DIR/splunkd.pem                        splunkd's certificate, key and CA in one PEM, as
#                                          server.conf [sslConfig] serverCert wants it
#
# Idempotent: a certificate is issued again only when it is missing, not signed by the current
# CA, expiring within OPSMESH_TLS_RENEW_DAYS (30) or naming other hosts than wanted. Validity:
# OPSMESH_TLS_CA_DAYS (3650) for the CA, OPSMESH_TLS_DAYS (397) for server certificates.
# Needs openssl (1.1.1 or later).
set -euo pipefail

[ "$#" -eq 1 ] || { echo "usage: tls.sh DIR" >&2; exit 2; }
dir="$1"
CA_DAYS="${OPSMESH_TLS_CA_DAYS:-3650}"
DAYS="${OPSMESH_TLS_DAYS:-397}"
RENEW_DAYS="${OPSMESH_TLS_RENEW_DAYS:-30}"
# Host names each server is reached by: its compose service name, and the host's loopback
# (ports published on 127.0.0.1; smoke.sh and host tools verify with the same CA).
RECEIVER_SANS="DNS:receiver-tls,DNS:localhost,IP:127.0.0.1"
SPLUNKD_SANS="DNS:splunk,DNS:localhost,IP:127.0.0.1"

mkdir -p "$dir"
cd "$dir"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# --- CA: key usage and key identifiers as strict verifiers (Python 3.13's
# VERIFY_X509_STRICT, Go) require them.
if [ ! -s ca.key ] || [ ! -s ca.pem ] \
    || ! openssl x509 -in ca.pem -noout -checkend "$((RENEW_DAYS * 86400))" >/dev/null; then
    openssl req -x509 -newkey rsa:3072 -nodes -sha256 -days "$CA_DAYS" \
        -keyout ca.key -out ca.pem -subj "/O=opsmesh compose/CN=opsmesh compose local CA" \
        -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" 2>"$work/openssl.log" \
        || { cat "$work/openssl.log" >&2; exit 1; }
    rm -f receiver-tls.crt splunkd.crt splunkd.pem   # signed by the old CA
    echo "tls.sh: new local CA $dir/ca.pem" >&2
fi

# clientAuth too: splunkd's KV store presents the same certificate as a client.
# The SANs a certificate names, in the form they are asked for (DNS:a,IP:b).
sans_of() {
    openssl x509 -in "$1" -noout -ext subjectAltName 2>/dev/null \
        | sed -n '2,$p' | tr -d ' \n' | sed 's/IPAddress:/IP:/g'
}

# issue NAME SANS: NAME.key and NAME.crt, unless a current pair is in place (returns 1 then).
issue() {
    local name="$1" sans="$2" cert="$1.crt" cn
    if [ -s "$name.key" ] && [ -s "$cert" ] \
        && openssl verify -CAfile ca.pem "$cert" >/dev/null 2>&1 \
        && openssl x509 -in "$cert" -noout -checkend "$((RENEW_DAYS * 86400))" >/dev/null \
        && [ "$(sans_of "$cert")" = "$sans" ]; then
        return 1
    fi
    cat >"$work/$name.ext" <<EXT
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth,clientAuth
subjectAltName = $sans
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT
    cn="${sans%%,*}"
    if ! openssl req -new -newkey rsa:2048 -nodes -keyout "$name.key" -out "$work/$name.csr" \
            -subj "/O=opsmesh compose/CN=${cn#DNS:}" 2>"$work/openssl.log" \
        || ! openssl x509 -req -in "$work/$name.csr" -CA ca.pem -CAkey ca.key -CAcreateserial \
            -CAserial "$work/ca.srl" -sha256 -days "$DAYS" -extfile "$work/$name.ext" \
            -out "$cert" 2>>"$work/openssl.log"; then
        cat "$work/openssl.log" >&2
        exit 1
    fi
    echo "tls.sh: issued $dir/$cert for ${sans//,/, }" >&2
}

issue receiver-tls "$RECEIVER_SANS" || true
if issue splunkd "$SPLUNKD_SANS" || [ ! -s splunkd.pem ]; then
    cat splunkd.crt splunkd.key ca.pem >splunkd.pem
fi

# Mounted into containers that run as other users (compose secrets keep host permissions);
# the folder itself stays private.
chmod 0644 ca.pem receiver-tls.crt receiver-tls.key splunkd.crt splunkd.key splunkd.pem
chmod 0600 ca.key

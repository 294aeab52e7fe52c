#!/usr/bin/env bash
# Builds the node tests' web image as an OCI image layout tarball, from
# Debian's busybox-static: busybox httpd serving /version (the version string)
# and /healthz, on the port in $PORT (so one image serves either colour).
#
#   build-test-image.sh VERSION OUT.tar [NAME]
#
# VERSION is written to /version. A VERSION starting with `bad` builds an
# image without /healthz (its health check answers 404). NAME is the image
# reference recorded in the tarball [default: neutral.test/web:VERSION].
# Output is deterministic for the same inputs. Nothing is downloaded.
set -euo pipefail

version=${1:?usage: build-test-image.sh VERSION OUT.tar [NAME]}
out=${2:?usage: build-test-image.sh VERSION OUT.tar [NAME]}
name=${3:-neutral.test/web:$version}
busybox=${BUSYBOX:-/bin/busybox}
[[ -x $busybox ]] || { echo "build-test-image: $busybox missing (apt-get install busybox-static)" >&2; exit 2; }
arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)
[[ $version =~ ^[A-Za-z0-9._-]+$ ]] || { echo "build-test-image: bad version '$version'" >&2; exit 2; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
root=$work/rootfs
mkdir -p "$root/bin" "$root/www" "$root/tmp"
cp "$busybox" "$root/bin/busybox"
ln -s busybox "$root/bin/sh"
printf '%s\n' "$version" >"$root/www/version"
# The bad image has no /healthz: its health check answers 404.
[[ $version == bad* ]] || printf 'ok\n' >"$root/www/healthz"
cat >"$root/entrypoint" <<'SH'
#!/bin/sh
# Serves /www on ${BIND:-127.0.0.1}:$PORT in the foreground. As PID 1 httpd
# would ignore SIGTERM, so the shell stays PID 1 and forwards it.
: "${PORT:?PORT is not set}"
/bin/busybox httpd -f -v -p "${BIND:-127.0.0.1}:$PORT" -h /www &
child=$!
trap 'kill -TERM "$child" 2>/dev/null; wait "$child"; exit 0' TERM INT
wait "$child"
SH
chmod 0755 "$root/entrypoint"

blobs=$work/layout/blobs/sha256
mkdir -p "$blobs"
layer=$work/layer.tar
tar --create --file "$layer" --directory "$root" --sort=name --owner=0 --group=0 \
  --numeric-owner --mtime=@0 --format=posix --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime .
digest_of() { sha256sum "$1" | cut -d' ' -f1; }
size_of() { stat -c %s "$1"; }
layer_digest=$(digest_of "$layer")
mv "$layer" "$blobs/$layer_digest"

config=$work/config.json
printf '%s' "{\"architecture\":\"$arch\",\"os\":\"linux\",\"config\":{\"Env\":[\"PATH=/bin\",\"PORT=8080\"],\"Entrypoint\":[\"/entrypoint\"],\"Labels\":{\"org.opencontainers.image.version\":\"$version\"}},\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"sha256:$layer_digest\"]},\"history\":[{\"created_by\":\"tests/images/build-test-image.sh $version\"}]}" >"$config"
config_digest=$(digest_of "$config")
config_size=$(size_of "$config")
mv "$config" "$blobs/$config_digest"

manifest=$work/manifest.json
printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"sha256:$config_digest\",\"size\":$config_size},\"layers\":[{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar\",\"digest\":\"sha256:$layer_digest\",\"size\":$(size_of "$blobs/$layer_digest")}]}" >"$manifest"
manifest_digest=$(digest_of "$manifest")
manifest_size=$(size_of "$manifest")
mv "$manifest" "$blobs/$manifest_digest"

printf '%s' '{"imageLayoutVersion":"1.0.0"}' >"$work/layout/oci-layout"
printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\"digest\":\"sha256:$manifest_digest\",\"size\":$manifest_size,\"platform\":{\"architecture\":\"$arch\",\"os\":\"linux\"},\"annotations\":{\"io.containerd.image.name\":\"$name\",\"org.opencontainers.image.ref.name\":\"${name##*:}\"}}]}" >"$work/layout/index.json"

mkdir -p "$(dirname "$out")"
tar --create --file "$out.partial" --directory "$work/layout" --sort=name --owner=0 --group=0 \
  --numeric-owner --mtime=@0 oci-layout index.json blobs
mv "$out.partial" "$out"
echo "$name"

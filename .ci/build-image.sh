#!/usr/bin/env bash
# Builds the Docker image pgadvisory/postgres:15 FROM scratch out of this
# machine's own PostgreSQL 15 files, for itest's Docker mode where no image
# registry is reachable. The image follows the official postgres image's
# conventions for what itest uses: POSTGRES_USER, POSTGRES_PASSWORD,
# POSTGRES_DB, POSTGRES_HOST_AUTH_METHOD, POSTGRES_INITDB_ARGS, PGDATA, and
# extra arguments ("-c name=value") handed to postgres.
#
# Idempotent: an image built from the same inputs is kept (FORCE=1 rebuilds).
# Usage: .ci/build-image.sh [image]   (default pgadvisory/postgres:15)
set -euo pipefail

image=${1:-pgadvisory/postgres:15}
pgver=15
pglib=/usr/lib/postgresql/$pgver
pgshare=/usr/share/postgresql/$pgver
uid=999
gid=999

for f in "$pglib/bin/postgres" "$pglib/bin/initdb" "$pglib/bin/pg_ctl" "$pgshare/postgres.bki"; do
	[ -e "$f" ] || { echo "build-image: $f is missing (install postgresql-$pgver)" >&2; exit 1; }
done

# The inputs that decide the image: this script and the server's version.
here=$(cd "$(dirname "$0")" && pwd)
fingerprint=$( { cat "$here/build-image.sh"; "$pglib/bin/postgres" --version; } | sha256sum | cut -c1-16)
if [ "${FORCE:-0}" != 1 ] &&
	[ "$(docker image inspect -f '{{index .Config.Labels "pgadvisory.fingerprint"}}' "$image" 2>/dev/null || true)" = "$fingerprint" ]; then
	echo "build-image: $image is up to date ($fingerprint)"
	exit 0
fi

ctx=$(mktemp -d /tmp/pgadvisory-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
root=$ctx/rootfs
mkdir -p "$root"

# Keep the host's merged-/usr layout (/lib -> usr/lib and so on) so that the
# paths compiled into the binaries and the loader cache resolve the same way.
for d in bin sbin lib lib64; do
	if [ -L "/$d" ]; then
		ln -s "$(readlink "/$d")" "$root/$d"
		mkdir -p "$root/$(readlink -f "/$d")"
	fi
done

# The server: the programs the entrypoint and a debugging session use, the
# extension libraries (without the LLVM JIT, which would pull in LLVM for
# nothing: PostgreSQL runs without JIT when the provider is absent), and the
# share directory.
mkdir -p "$root$pglib/bin" "$root$pglib/lib" "$root$pgshare"
bins=(postgres initdb pg_ctl psql)
for b in "${bins[@]}"; do cp -a "$pglib/bin/$b" "$root$pglib/bin/"; done
find "$pglib/lib" -maxdepth 1 -type f -name '*.so' ! -name 'llvmjit*' -exec cp -a -t "$root$pglib/lib/" {} +
cp -a "$pgshare/." "$root$pgshare/"
[ -d /usr/share/postgresql-common ] && mkdir -p "$root/usr/share" && cp -a /usr/share/postgresql-common "$root/usr/share/"
# The server reads time zones from the system's tzdata.
[ -d /usr/share/zoneinfo ] && mkdir -p "$root/usr/share" && cp -a /usr/share/zoneinfo "$root/usr/share/"

# The shell and the few tools the entrypoint uses, and the shared-library
# closure of everything executable in the image, copied in one pass: tar
# dereferences each path (-h) and writes it under its own name, through the
# image's /lib -> usr/lib links.
tools=(/bin/sh /bin/rm /bin/mkdir /bin/chmod /bin/cat)
objects=("${tools[@]}")
for b in "${bins[@]}"; do objects+=("$pglib/bin/$b"); done
objects+=("$root$pglib"/lib/*.so)
{
	printf '%s\n' "${tools[@]}"
	{ printf '%s\0' "${objects[@]}" | xargs -0 -n 16 -P 4 ldd 2>/dev/null || true; } |
		awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }'
	[ -f /etc/ld.so.cache ] && echo /etc/ld.so.cache
} | sort -u | sed 's|^/||' >"$ctx/files"
tar -C / -chf - -T "$ctx/files" | tar -C "$root" --keep-directory-symlink -xf -

# Users, name service, writable places.
mkdir -p "$root/etc" "$root/tmp" "$root/var/lib/postgresql/data" "$root/var/run/postgresql"
chmod 1777 "$root/tmp"
printf 'root:x:0:0:root:/root:/bin/sh\npostgres:x:%d:%d:PostgreSQL:/var/lib/postgresql:/bin/sh\n' $uid $gid >"$root/etc/passwd"
printf 'root:x:0:\npostgres:x:%d:\n' $gid >"$root/etc/group"
printf 'passwd: files\ngroup: files\nhosts: files\n' >"$root/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' >"$root/etc/hosts"

cat >"$root/docker-entrypoint.sh" <<'ENTRYPOINT'
#!/bin/sh
# Entry point with the official postgres image's conventions: a first
# argument starting with "-" is an argument of postgres; on an empty PGDATA
# the cluster is made with POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB,
# POSTGRES_HOST_AUTH_METHOD and POSTGRES_INITDB_ARGS.
set -eu
if [ "${1#-}" != "$1" ]; then
	set -- postgres "$@"
fi
if [ "$1" = postgres ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
	user=${POSTGRES_USER:-postgres}
	db=${POSTGRES_DB:-$user}
	pass=${POSTGRES_PASSWORD:-}
	method=${POSTGRES_HOST_AUTH_METHOD:-}
	if [ -z "$method" ]; then
		if [ -n "$pass" ]; then method=scram-sha-256; else
			echo "entrypoint: set POSTGRES_PASSWORD, or POSTGRES_HOST_AUTH_METHOD=trust" >&2
			exit 1
		fi
	fi
	mkdir -p "$PGDATA"
	chmod 700 "$PGDATA"
	pwargs=
	if [ -n "$pass" ]; then
		printf '%s\n' "$pass" >/tmp/pwfile
		pwargs=--pwfile=/tmp/pwfile
	fi
	# The image has no system locales: UTF8 with the C locale, unless
	# POSTGRES_INITDB_ARGS (later on the line, so it wins) says otherwise.
	# shellcheck disable=SC2086 # POSTGRES_INITDB_ARGS is a list of words
	initdb -D "$PGDATA" -U "$user" $pwargs --auth-local=trust --auth-host="$method" \
		--encoding=UTF8 --locale=C ${POSTGRES_INITDB_ARGS:-} >/tmp/initdb.log 2>&1 ||
		{ cat /tmp/initdb.log >&2 2>/dev/null; echo "entrypoint: initdb failed" >&2; exit 1; }
	rm -f /tmp/pwfile /tmp/initdb.log
	# Clients come from the bridge network, which initdb's own rules do not cover.
	printf 'host all all all %s\n' "$method" >>"$PGDATA/pg_hba.conf"
	printf "listen_addresses = '*'\nunix_socket_directories = '/tmp'\n" >>"$PGDATA/postgresql.conf"
	if [ "$db" != postgres ]; then
		printf 'CREATE DATABASE "%s";\n' "$db" | postgres --single -j -D "$PGDATA" postgres >/tmp/single.log 2>&1 ||
			{ cat /tmp/single.log >&2; echo "entrypoint: CREATE DATABASE $db failed" >&2; exit 1; }
		rm -f /tmp/single.log
	fi
	echo "entrypoint: initialised $PGDATA (user $user, database $db, auth $method)"
fi
exec "$@"
ENTRYPOINT
chmod 755 "$root/docker-entrypoint.sh"

cat >"$ctx/Dockerfile" <<DOCKERFILE
FROM scratch
COPY rootfs/ /
COPY --chown=$uid:$gid rootfs/var/lib/postgresql /var/lib/postgresql
COPY --chown=$uid:$gid rootfs/var/run/postgresql /var/run/postgresql
ENV PATH=$pglib/bin:/usr/bin:/bin PGDATA=/var/lib/postgresql/data LANG=C.UTF-8 TZ=UTC
USER postgres
WORKDIR /var/lib/postgresql
EXPOSE 5432
STOPSIGNAL SIGINT
LABEL pgadvisory.fingerprint=$fingerprint
ENTRYPOINT ["/docker-entrypoint.sh"]
CMD ["postgres"]
DOCKERFILE

# The classic builder: it ships with the engine, BuildKit may not be installed.
DOCKER_BUILDKIT=0 docker build -q -t "$image" "$ctx" >/dev/null
# Earlier builds that the tag no longer names and no container uses.
docker image prune -f --filter label=pgadvisory.fingerprint >/dev/null || true
# Smoke test: the loader finds every library.
docker run --rm --entrypoint postgres "$image" --version
echo "build-image: built $image ($fingerprint, $(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%d MB", $1 / 1e6 }'))"

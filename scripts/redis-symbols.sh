#!/usr/bin/env bash
# Installs the debug symbols of Debian's redis-server, so that make cost
# names Redis's static functions and its Lua (luaV_execute, luaS_newlstr,
# luaC_step…) instead of showing addresses. Debian ships them in its debug
# archive only, which this machine cannot reach; but Debian's build of
# redis is reproducible, so this rebuilds the installed version from its
# Debian source package and installs the -dbgsym package of that build,
# and only when the rebuilt binary has the installed one's build id (the
# same bytes, so the symbols are exact); when the rebuild differs, it
# keeps the rebuilt binary, with its symbols, for make cost to run
# (scripts/cost.sh). Nothing to do when either is there; else about 5
# minutes on 2 cores, as root (apt-get build-dep, dpkg -i). It never
# changes redis-server itself.
set -euo pipefail
root() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }
export DEBIAN_FRONTEND=noninteractive
bin=$(readlink -f "$(command -v redis-server)")
if ! command -v readelf >/dev/null 2>&1; then
  root || { echo "redis-symbols: readelf missing (apt-get install binutils)" >&2; exit 1; }
  apt-get install -y -qq --no-install-recommends binutils >/dev/null
fi
id=$(readelf -n "$bin" | awk '/Build ID/ { print $3 }')
[ -n "$id" ] && [ -e "/usr/lib/debug/.build-id/${id:0:2}/${id:2}.debug" ] && exit 0
# A rebuild that differed from the installed binary, kept from an earlier run.
cache=${XDG_CACHE_HOME:-$HOME/.cache}/fleetd/redis-server-$id
[ -x "$cache" ] && exit 0
root || { echo "redis-symbols: no debug symbols for $bin; building them needs root and apt-get" >&2; exit 1; }
pkg=$(dpkg -S "$bin" | cut -d: -f1)
ver=$(dpkg-query -W -f='${Version}' "$pkg")
src=$(dpkg-query -W -f='${source:Package}' "$pkg")
echo "redis-symbols: rebuilding $src $ver for the symbols of $bin (build id $id)" >&2
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
# The source package from the Debian suites that apt already uses, with
# lists of its own so that the machine's apt configuration is untouched.
apt-get indextargets --format '$(REPO_URI) $(RELEASE) $(COMPONENT) $(ORIGIN)' 'Created-By: Packages' |
  awk '$4 == "Debian" { print "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] " $1 " " $2 " " $3 }' |
  sort -u > "$work/sources.list"
mkdir -p "$work/lists/partial" "$work/cache/archives/partial"
apt=(apt-get -qq -o Dir::Etc::SourceList="$work/sources.list" -o Dir::Etc::SourceParts=/nonexistent
  -o Dir::State::Lists="$work/lists" -o Dir::Cache="$work/cache" -o APT::Sandbox::User=root)
"${apt[@]}" update
(cd "$work" && "${apt[@]}" source --download-only "$src=$ver" >/dev/null 2>&1)
apt-get install -y -qq --no-install-recommends dpkg-dev >/dev/null
# (apt checked the files against the signed suite; dpkg-source's own
# check of the .dsc signature needs a keyring the machine lacks)
dpkg-source -x "$work"/*.dsc "$work/src" >/dev/null 2>&1
apt-get build-dep -y -qq -P nocheck "$work/src" >/dev/null
(cd "$work/src" && DEB_BUILD_OPTIONS="nocheck parallel=$(nproc)" DEB_BUILD_PROFILES=nocheck \
  nice dpkg-buildpackage -b -uc -us >"$work/build.log" 2>&1) || { tail -20 "$work/build.log" >&2; exit 1; }
deb=$(ls "$work/${pkg}-dbgsym_"*.deb)
dpkg-deb -c "$deb" > "$work/dbgsym.list"
if ! grep -q "/${id:0:2}/${id:2}.debug$" "$work/dbgsym.list"; then
  # The same source and flags, other bytes (Debian rebuilt it with other
  # tools): its instruction counts are within about 0.5 % of the
  # installed binary's, so make cost runs it, with its symbols.
  mkdir -p "$(dirname "$cache")"
  cp "$work/src/src/redis-server" "$cache"
  echo "redis-symbols: the rebuild of $src $ver differs from the installed binary; make cost runs the rebuild ($cache), which has symbols" >&2
  exit 0
fi
dpkg -i "$deb" >/dev/null
echo "redis-symbols: installed $(basename "$deb")" >&2

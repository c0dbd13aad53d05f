# The dashboard's npm dependencies, for the run and test scripts (sourced, not executed).
#
# dashboard_deps DIR: runs `npm ci` in DIR unless its last one finished for the current
# package-lock.json. The proof is a stamp written into node_modules only after `npm ci`
# succeeds (removed before it starts), so an interrupted install — node_modules present
# but half-filled — is redone, and so is one for an older lock file.
# dashboard_npm_ci DIR: `npm ci` in DIR, stamped when it succeeds.

DASHBOARD_STAMP=node_modules/.perpetuo-npm-ci

dashboard_lock_sum() {
  sha256sum "$1/package-lock.json" | cut -d' ' -f1
}

dashboard_npm_ci() {
  local dir="$1"
  rm -f "$dir/$DASHBOARD_STAMP"
  (cd "$dir" && npm ci --no-audit --no-fund) || return 1
  dashboard_lock_sum "$dir" > "$dir/$DASHBOARD_STAMP"
}

dashboard_deps() {
  local dir="$1"
  if [ -f "$dir/$DASHBOARD_STAMP" ] && [ "$(cat "$dir/$DASHBOARD_STAMP")" = "$(dashboard_lock_sum "$dir")" ]; then
    return 0
  fi
  if [ -d "$dir/node_modules" ]; then
    echo "dashboard/node_modules is not from a finished \`npm ci\` of this package-lock.json: installing again"
  fi
  dashboard_npm_ci "$dir"
}

# dashboard_build DIR: dependencies as above, then `npm run build` when the sources are
# newer than the last build (or there is none).
dashboard_build() {
  local dir="$1"
  dashboard_deps "$dir" || return 1
  if [ ! -f "$dir/dist/index.html" ] || [ -n "$(find "$dir/src" "$dir/index.html" "$dir/package.json" -newer "$dir/dist/index.html" 2>/dev/null | head -n 1)" ]; then
    (cd "$dir" && npm run build) || return 1
  fi
}

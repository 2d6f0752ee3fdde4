# shellcheck shell=sh
# Sourceable POSIX sh: the environment for running the Pulumi engine that
# tests/toolchain/build-pulumi.sh builds, offline (local state, no update
# check, no plugin downloads; providers come from $PULUMI_HOME/plugins, where
# build-pulumi.sh installs them). Usage: . tests/toolchain/pulumi-env.sh
# build-pulumi.sh reads the version and bin dir from here too.
GVISOR_FLEET_PULUMI_VERSION=${GVISOR_FLEET_PULUMI_VERSION:-3.274.1}
GVISOR_FLEET_PULUMI_BIN=${GVISOR_FLEET_CACHE:-$HOME/.cache/gvisor-fleet}/pulumi-$GVISOR_FLEET_PULUMI_VERSION/bin
PATH=$GVISOR_FLEET_PULUMI_BIN:$PATH
PULUMI_HOME=${PULUMI_HOME:-${GVISOR_FLEET_CACHE:-$HOME/.cache/gvisor-fleet}/pulumi-home}
if [ -z "${PULUMI_CONFIG_PASSPHRASE+set}" ] && [ -z "${PULUMI_CONFIG_PASSPHRASE_FILE:-}" ]; then
    PULUMI_CONFIG_PASSPHRASE=gvisor-fleet-test
    export PULUMI_CONFIG_PASSPHRASE
fi
PULUMI_SKIP_UPDATE_CHECK=true
PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
PULUMI_IGNORE_AMBIENT_PLUGINS=true
export GVISOR_FLEET_PULUMI_VERSION GVISOR_FLEET_PULUMI_BIN PATH PULUMI_HOME \
    PULUMI_SKIP_UPDATE_CHECK PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION PULUMI_IGNORE_AMBIENT_PLUGINS

#!/bin/sh
# Stand-in for the k3s install script, run with INSTALL_K3S_SKIP_DOWNLOAD:
# records how it was called and writes the uninstall script.
set -eu
R=${GVISOR_FLEET_ROOT:?}
{
    echo "SKIP_DOWNLOAD=${INSTALL_K3S_SKIP_DOWNLOAD:-} SKIP_START=${INSTALL_K3S_SKIP_START:-} EXEC=${INSTALL_K3S_EXEC:-}"
} >> "$R/install.log"
[ -x "$INSTALL_K3S_BIN_DIR/k3s" ] || { echo "install.sh: no k3s binary in $INSTALL_K3S_BIN_DIR" >&2; exit 1; }
case $INSTALL_K3S_EXEC in
    server) name=k3s-uninstall.sh ;;
    agent) name=k3s-agent-uninstall.sh ;;
    *) exit 1 ;;
esac
cat > "$INSTALL_K3S_BIN_DIR/$name" <<EOS
#!/bin/sh
rm -rf "$R/run/k3s.active" "$R/var/lib/rancher/k3s" "$INSTALL_K3S_BIN_DIR/k3s" "$INSTALL_K3S_BIN_DIR/$name"
echo uninstalled >> "$R/install.log"
EOS
chmod 0755 "$INSTALL_K3S_BIN_DIR/$name"

"""The OCI archive writer (tests/support/oci.py): what `ctr images import` reads, byte for byte.

The host tier imports the archives with containerd's own ctr
(tests/host/test_kubernetes_dir.py); here, the layout and its digests.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import images
from tests.support import oci


def rootfs(tmp_path: Path) -> Path:
    root = tmp_path / "root"
    (root / "usr/local/bin").mkdir(parents=True)
    (root / "tmp").mkdir()
    (root / "tmp").chmod(0o1777)
    program = root / "usr/local/bin/kubernetes"
    program.write_bytes(b"\x7fELF pretend")
    program.chmod(0o4755)  # setuid is dropped
    (root / "usr/local/bin/kube-apiserver").symlink_to("kubernetes")
    return root


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}  # type: ignore[union-attr]


def blob(files: dict[str, bytes], descriptor: dict[str, Any]) -> bytes:
    data = files[f"blobs/sha256/{descriptor['digest'].removeprefix('sha256:')}"]
    assert len(data) == descriptor["size"]
    assert hashlib.sha256(data).hexdigest() == descriptor["digest"].removeprefix("sha256:")
    return data


def read_image(archive: Path) -> tuple[dict[str, Any], dict[str, Any], dict[str, Any], bytes]:
    """index.json, the manifest, the config and the one layer's tar, each checked against its digest."""
    files = members(archive)
    assert json.loads(files["oci-layout"]) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads(files["index.json"])
    digests = {m["digest"] for m in index["manifests"]}
    assert len(digests) == 1, "every name points at the one manifest"
    manifest = json.loads(blob(files, index["manifests"][0]))
    config = json.loads(blob(files, manifest["config"]))
    (layer_desc,) = manifest["layers"]
    layer = blob(files, layer_desc)
    if layer_desc["mediaType"] == oci.LAYER_GZIP:
        layer = gzip.decompress(layer)
    assert config["rootfs"]["diff_ids"] == [f"sha256:{hashlib.sha256(layer).hexdigest()}"]
    return index, manifest, config, layer


def test_a_tree_becomes_a_layer_owned_by_root_dated_zero_in_path_order(tmp_path: Path):
    root = rootfs(tmp_path)
    with tarfile.open(fileobj=io.BytesIO(oci.layer_tar(oci.tree_entries(root)))) as tar:
        got = [(m.name, m.type, m.mode, m.uid, m.gid, m.mtime, m.linkname) for m in tar.getmembers()]
    assert got == [
        ("tmp", tarfile.DIRTYPE, 0o1777, 0, 0, 0, ""),
        ("usr", tarfile.DIRTYPE, 0o755, 0, 0, 0, ""),
        ("usr/local", tarfile.DIRTYPE, 0o755, 0, 0, 0, ""),
        ("usr/local/bin", tarfile.DIRTYPE, 0o755, 0, 0, 0, ""),
        ("usr/local/bin/kube-apiserver", tarfile.SYMTYPE, 0o777, 0, 0, 0, "kubernetes"),
        ("usr/local/bin/kubernetes", tarfile.REGTYPE, 0o755, 0, 0, 0, ""),
    ]


def test_the_same_tree_writes_the_same_bytes(tmp_path: Path):
    root = rootfs(tmp_path)
    first = oci.make_layer(oci.layer_tar(oci.tree_entries(root)), compress=True)
    os.utime(root / "usr/local/bin/kubernetes", (1, 1))  # times do not count
    second = oci.make_layer(oci.layer_tar(oci.tree_entries(root)), compress=True)
    assert first == second
    for out in (tmp_path / "a.tar", tmp_path / "b.tar"):
        oci.write_image(out, ["registry.k8s.io/pause:3.10.2"], "amd64", [first], ["/usr/local/bin/pause"])
    assert (tmp_path / "a.tar").read_bytes() == (tmp_path / "b.tar").read_bytes()


def test_an_image_carries_each_of_its_names_its_platform_and_its_program(tmp_path: Path):
    layer = oci.make_layer(oci.layer_tar(oci.tree_entries(rootfs(tmp_path))), compress=True)
    names = ["registry.k8s.io/pause:3.10.2", "registry.k8s.io/pause:3.10"]
    index, manifest, config, _ = read_image(
        oci.write_image(tmp_path / "pause.tar", names, "arm64", [layer], ["/usr/local/bin/pause"])
    )
    assert [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]] == names
    assert [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]] == names
    assert {m["platform"]["architecture"] for m in index["manifests"]} == {"arm64"}
    assert manifest["mediaType"] == oci.MANIFEST and manifest["layers"][0]["mediaType"] == oci.LAYER_GZIP
    assert (config["architecture"], config["os"]) == ("arm64", "linux")
    assert config["config"]["Entrypoint"] == ["/usr/local/bin/pause"]
    assert config["config"]["Env"] == [oci.PATH_ENV] and "/usr/local/bin" in oci.PATH_ENV


@pytest.mark.parametrize(
    ("names", "goarch", "message"),
    [
        ([], "amd64", "at least one name"),
        (["registry.k8s.io/pause"], "amd64", "not a full reference with a tag"),
        (["localhost:5000/pause"], "amd64", "not a full reference with a tag"),
        (["registry.k8s.io/pause:3.10.2"], "x86_64", "unsupported image architecture 'x86_64'"),
    ],
)
def test_an_image_without_a_tagged_name_or_of_another_arch_is_refused(
    tmp_path: Path, names: list[str], goarch: str, message: str
):
    layer = oci.make_layer(oci.layer_tar([]))
    with pytest.raises(ValueError, match=message):
        oci.write_image(tmp_path / "x.tar", names, goarch, [layer], ["/pause"])
    assert not (tmp_path / "x.tar").exists()


def test_only_directories_files_and_symlinks_go_in_a_layer(tmp_path: Path):
    root = rootfs(tmp_path)
    os.mkfifo(root / "tmp/fifo")
    with pytest.raises(ValueError, match="only directories, files and symlinks"):
        oci.tree_entries(root)
    with pytest.raises(ValueError, match="not a directory"):
        oci.tree_entries(root / "missing")


def test_the_command_writes_images_that_share_one_layer(tmp_path: Path):
    root = rootfs(tmp_path)
    argv = ["--rootfs", str(root), "--arch", "amd64", "--gzip"]
    for program in ("kube-apiserver", "kube-scheduler"):
        argv += ["--image", str(tmp_path / f"{program}.tar"), f"/usr/local/bin/{program}",
                 f"registry.k8s.io/{program}:v1.37.2"]  # fmt: skip
    assert oci.main(argv) == 0
    apiserver = read_image(tmp_path / "kube-apiserver.tar")
    scheduler = read_image(tmp_path / "kube-scheduler.tar")
    assert apiserver[1]["layers"] == scheduler[1]["layers"]
    assert apiserver[2]["config"]["Entrypoint"] == ["/usr/local/bin/kube-apiserver"]
    assert scheduler[2]["config"]["Entrypoint"] == ["/usr/local/bin/kube-scheduler"]
    assert apiserver[0]["manifests"][0]["annotations"]["io.containerd.image.name"] == (
        "registry.k8s.io/kube-apiserver:v1.37.2"
    )
    with tarfile.open(fileobj=io.BytesIO(apiserver[3])) as tar:
        assert tar.extractfile("usr/local/bin/kubernetes").read() == b"\x7fELF pretend"  # type: ignore[union-attr]


def test_images_given_one_archive_share_it_and_store_their_layer_once(tmp_path: Path):
    root = rootfs(tmp_path)
    out = tmp_path / "control-plane.tar"
    argv = ["--rootfs", str(root), "--arch", "amd64", "--gzip"]
    for program in ("kube-apiserver", "kube-scheduler"):
        argv += ["--image", str(out), f"/usr/local/bin/{program}", f"registry.k8s.io/{program}:v1.37.2"]
    assert oci.main(argv) == 0
    files = members(out)
    index = json.loads(files["index.json"])
    names = [m["annotations"]["io.containerd.image.name"] for m in index["manifests"]]
    assert names == ["registry.k8s.io/kube-apiserver:v1.37.2", "registry.k8s.io/kube-scheduler:v1.37.2"]
    manifests = [json.loads(blob(files, m)) for m in index["manifests"]]
    entrypoints = [json.loads(blob(files, m["config"]))["config"]["Entrypoint"] for m in manifests]
    assert entrypoints == [["/usr/local/bin/kube-apiserver"], ["/usr/local/bin/kube-scheduler"]]
    assert manifests[0]["layers"] == manifests[1]["layers"]
    blobs = [name for name in files if name.startswith("blobs/")]
    assert len(blobs) == 5, "one layer, two configs, two manifests"
    written = out.read_bytes()
    assert oci.main(argv) == 0 and out.read_bytes() == written, "the same input writes the same bytes"


def test_the_command_says_what_is_wrong_and_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    argv = ["--rootfs", str(tmp_path / "missing"), "--arch", "amd64", "--image", str(tmp_path / "x.tar"), "/x", "a/b:1"]
    with pytest.raises(SystemExit) as exit_info:
        oci.main(argv)
    assert exit_info.value.code == 1
    assert "not a directory to make a layer of" in capsys.readouterr().err


def test_the_cluster_tiers_images_are_written_by_the_same_writer(tmp_path: Path):
    busybox = tmp_path / "busybox"
    busybox.write_bytes(b"pretend busybox")
    _, _, config, layer = read_image(
        images.pause_image(tmp_path / "pause.tar", "gvisor-fleet.test/pause:1", "aarch64", busybox)
    )
    assert config["architecture"] == "arm64"
    assert config["config"]["Entrypoint"] == ["/bin/sh", "-c", images.PAUSE_SCRIPT]
    with tarfile.open(fileobj=io.BytesIO(layer)) as tar:
        assert tar.getmember("bin/sh").linkname == "busybox"
        assert tar.extractfile("bin/busybox").read() == b"pretend busybox"  # type: ignore[union-attr]

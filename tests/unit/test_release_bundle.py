"""releaseDir's folder as one archive (components/kube/release_bundle.py), unpacked as the node script does."""

from __future__ import annotations

import hashlib
import subprocess
import tarfile
from pathlib import Path

import pytest

from components.kube.release_bundle import BundleError, bundle

PROGRAM = b"\x7fELF one multi-call program" * 1000


def release_folder(root: Path) -> Path:
    """A folder laid out like make-kubernetes-dir.sh's: three names for one program, an image, SHA512SUMS."""
    folder = root / "v1.37.2" / "amd64"
    (folder / "images").mkdir(parents=True)
    for name in ("kubeadm", "kubelet", "kubectl"):
        (folder / name).write_bytes(PROGRAM)
        (folder / name).chmod(0o755)
    (folder / "images" / "pause.tar").write_bytes(b"an image")
    (folder / "cni-plugins.tgz").write_bytes(b"plugins")
    rows = sorted(
        f"{hashlib.sha512(p.read_bytes()).hexdigest()}  {p.relative_to(folder).as_posix()}"
        for p in folder.rglob("*")
        if p.is_file()
    )
    (folder / "SHA512SUMS").write_text("\n".join(rows) + "\n")
    return folder


def test_each_distinct_file_is_stored_once_and_unpacks_to_the_folder(tmp_path: Path):
    folder = release_folder(tmp_path / "release")
    archive = bundle(folder, tmp_path / "cache")
    with tarfile.open(archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == sorted(["SHA512SUMS", "cni-plugins.tgz", "images/pause.tar", "kubeadm", "kubectl",
                                      "kubelet"])  # fmt: skip
    regular = [n for n, m in members.items() if m.isfile() and m.size == len(PROGRAM)]
    assert regular == ["kubeadm"], "the program's bytes once, the other names as links"
    assert {members[n].linkname for n in ("kubectl", "kubelet")} == {"kubeadm"}
    assert archive.stat().st_size < len(PROGRAM) / 10, "compressed"
    # As the node script unpacks it, then checks it.
    stage = tmp_path / "stage"
    stage.mkdir()
    subprocess.run(["tar", "-C", str(stage), "--no-same-owner", "-xzf", str(archive)], check=True)
    subprocess.run(["sha512sum", "--quiet", "-c", "SHA512SUMS"], cwd=stage, check=True)
    for name in ("kubeadm", "kubelet", "kubectl"):
        assert (stage / name).read_bytes() == PROGRAM and (stage / name).stat().st_mode & 0o777 == 0o755
    assert (stage / "images" / "pause.tar").stat().st_mode & 0o777 == 0o644


def test_the_same_folder_gives_the_same_bytes_and_is_made_once(tmp_path: Path):
    folder = release_folder(tmp_path / "release")
    first = bundle(folder, tmp_path / "a")
    (folder / "kubectl").touch()  # times do not count
    second = bundle(folder, tmp_path / "b")
    assert first.name == second.name and first.read_bytes() == second.read_bytes()
    made = first.stat().st_mtime_ns
    assert bundle(folder, tmp_path / "a") == first and first.stat().st_mtime_ns == made


def test_another_content_is_another_archive(tmp_path: Path):
    folder = release_folder(tmp_path / "release")
    first = bundle(folder, tmp_path / "cache")
    (folder / "cni-plugins.tgz").write_bytes(b"newer plugins")
    digest = hashlib.sha512(b"newer plugins").hexdigest()
    sums = folder / "SHA512SUMS"
    sums.write_text("".join(f"{digest}  cni-plugins.tgz\n" if line.endswith("  cni-plugins.tgz") else f"{line}\n"
                            for line in sums.read_text().splitlines()))  # fmt: skip
    assert bundle(folder, tmp_path / "cache") != first


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "kubelet").unlink(), "lists kubelet, not in the folder; make the folder again"),
        (lambda f: (f / "SHA512SUMS").write_text("not a sum line\n"), "not '<sha512>  <relative path>'"),
        (lambda f: (f / "SHA512SUMS").write_text(f"{'0' * 128}  ../etc/passwd\n"), "not '<sha512>  <relative path>'"),
        (lambda f: (f / "SHA512SUMS").unlink(), "cannot read .*SHA512SUMS"),
    ],
)
def test_a_folder_unlike_its_sums_is_refused_naming_the_setting(tmp_path: Path, damage, message: str):
    folder = release_folder(tmp_path / "release")
    damage(folder)
    with pytest.raises(BundleError, match=message) as error:
        bundle(folder, tmp_path / "cache")
    assert str(error.value).startswith("gvisor-fleet:kubernetes.kubeadm.releaseDir: ")
    assert not any((tmp_path / "cache").glob("*")), "nothing half-made is left"

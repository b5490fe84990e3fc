"""Generate the Python stubs of every .proto under proto/ into meshserve/ (``meshserve.v1``).

Run ``python proto/codegen.py`` after editing a .proto; ``--check`` regenerates into a
temporary folder and fails when the committed stubs differ (CI and a unit test run it).
Needs the pinned ``grpcio-tools`` and ``mypy-protobuf`` from the ``dev`` extra.
"""

from __future__ import annotations

import argparse
import filecmp
import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_ROOT = ROOT / "proto"
# proto/meshserve/v1/x.proto becomes meshserve/v1/x_pb2.py (the `meshserve` package folder).
PACKAGE_ROOT = ROOT / "meshserve"
GENERATED_SUFFIXES = ("_pb2.py", "_pb2.pyi", "_pb2_grpc.py", "_pb2_grpc.pyi")


def proto_files() -> list[Path]:
    """Every .proto file under proto/, sorted for a stable command line."""
    return sorted(PROTO_ROOT.rglob("*.proto"))


def generate(out_dir: Path) -> None:
    """Run protoc (grpc_tools) for every proto file, writing `meshserve/...` under out_dir."""
    import grpc_tools
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = Path(grpc_tools.__file__).parent / "_proto"
    plugin = shutil.which("protoc-gen-mypy_grpc", path=str(Path(sys.executable).parent))
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
    ]
    if plugin:
        args += [f"--plugin=protoc-gen-mypy_grpc={plugin}", f"--mypy_grpc_out={out_dir}"]
    args += [str(p.relative_to(PROTO_ROOT)) for p in proto_files()]
    cwd = os.getcwd()
    try:
        os.chdir(PROTO_ROOT)
        code = protoc.main(args)
    finally:
        os.chdir(cwd)
    if code != 0:
        raise SystemExit(f"protoc failed with exit code {code}")


def generated_files(package_dir: Path) -> dict[str, Path]:
    """Generated files below package_dir keyed by their relative path."""
    return {
        str(p.relative_to(package_dir)): p
        for p in package_dir.rglob("*")
        if p.is_file() and p.name.endswith(GENERATED_SUFFIXES)
    }


def check() -> list[str]:
    """Regenerate into a temporary folder; return the stub files that are stale or missing."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        fresh = generated_files(Path(tmp) / "meshserve")
        committed = generated_files(PACKAGE_ROOT)
        stale = [name for name in fresh if name not in committed]
        stale += [name for name in committed if name not in fresh]
        stale += [
            name
            for name, path in fresh.items()
            if name in committed and not filecmp.cmp(path, committed[name], shallow=False)
        ]
        return sorted(set(stale))


def write() -> None:
    """Regenerate the stubs in place under meshserve/."""
    with tempfile.TemporaryDirectory() as tmp:
        generate(Path(tmp))
        for old in generated_files(PACKAGE_ROOT).values():
            old.unlink()
        for rel, path in generated_files(Path(tmp) / "meshserve").items():
            target = PACKAGE_ROOT / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            init = target.parent / "__init__.py"
            if not init.exists():
                init.write_text('"""Generated from proto/ by proto/codegen.py; do not edit."""\n')


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if committed stubs are stale")
    opts = parser.parse_args()
    if opts.check:
        stale = check()
        if stale:
            print("stale generated stubs (run python proto/codegen.py):", *stale, sep="\n  ")
            return 1
        print("generated stubs are up to date")
        return 0
    write()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Generates the gRPC stubs from the repository's proto/ directory at build
time, so the package can never drift from the server's contract."""

import os
import pathlib

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = pathlib.Path(__file__).parent.resolve()
PROTO_ROOT = (HERE / ".." / ".." / "proto").resolve()
PROTOS = ["idempotency/v1/coordinator.proto", "idempotency/v1/admin.proto"]


def generate(out_dir: pathlib.Path) -> None:
    import grpc_tools
    from grpc_tools import protoc

    out_dir.mkdir(parents=True, exist_ok=True)
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    code = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *(str(PROTO_ROOT / proto) for proto in PROTOS),
        ]
    )
    if code != 0:
        raise RuntimeError(f"protoc failed on {PROTOS} under {PROTO_ROOT}")
    for package in (out_dir / "idempotency", out_dir / "idempotency" / "v1"):
        (package / "__init__.py").touch()


class BuildWithStubs(build_py):
    def run(self):
        generate(pathlib.Path(self.build_lib))
        super().run()


if os.environ.get("IDEMPOTENCY_GENERATE_INTO_SRC"):
    # For working in the source tree without installing: stubs next to the helper.
    generate(HERE / "src")

setup(cmdclass={"build_py": BuildWithStubs})

"""Generates broker_client/_generated/ from proto/broker/v1/broker.proto with grpc_tools.protoc.

    /usr/bin/python3 clients/python/generate.py          # regenerate (after changing the proto)
    /usr/bin/python3 clients/python/generate.py --check  # exit 1 when the committed stubs are stale

The stubs are committed so the package works without grpc_tools; they are never edited by hand. The proto is
compiled under the virtual path broker_client/_generated/broker.proto so the generated modules import each other as
broker_client._generated.* (no top-level "broker" package is put on sys.path).
"""
import filecmp
import os
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROTO = os.path.join(HERE, "..", "..", "proto", "broker", "v1", "broker.proto")
PACKAGE_DIR = os.path.join(HERE, "broker_client", "_generated")
GENERATED = ("broker_pb2.py", "broker_pb2_grpc.py")


def generate_into(out_dir):
    """Writes the generated modules into out_dir/broker_client/_generated/ and returns that folder."""
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as include:
        virtual = os.path.join(include, "broker_client", "_generated")
        os.makedirs(virtual)
        shutil.copyfile(PROTO, os.path.join(virtual, "broker.proto"))
        code = protoc.main(["grpc_tools.protoc", "-I" + include, "--python_out=" + out_dir,
                            "--grpc_python_out=" + out_dir, "broker_client/_generated/broker.proto"])
        if code != 0:
            raise RuntimeError("protoc failed with exit code %d" % code)
    return os.path.join(out_dir, "broker_client", "_generated")


def stale_files():
    """Names of the generated files whose committed copy differs from a fresh generation (or is missing)."""
    with tempfile.TemporaryDirectory() as out_dir:
        fresh = generate_into(out_dir)
        return [name for name in GENERATED
                if not os.path.exists(os.path.join(PACKAGE_DIR, name))
                or not filecmp.cmp(os.path.join(fresh, name), os.path.join(PACKAGE_DIR, name), shallow=False)]


def main(argv):
    if "--check" in argv:
        stale = stale_files()
        if stale:
            print("stale generated stubs: %s; run /usr/bin/python3 clients/python/generate.py" % ", ".join(stale))
            return 1
        print("generated stubs are current")
        return 0
    with tempfile.TemporaryDirectory() as out_dir:
        fresh = generate_into(out_dir)
        for name in GENERATED:
            shutil.copyfile(os.path.join(fresh, name), os.path.join(PACKAGE_DIR, name))
    print("generated %s" % ", ".join(GENERATED))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

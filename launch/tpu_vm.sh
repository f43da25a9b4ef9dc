#!/bin/sh
# Thin wrapper: python3 launch/tpu_vm.py with the same arguments (see its --help).
exec python3 "$(dirname "$0")/tpu_vm.py" "$@"

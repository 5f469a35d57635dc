#!/bin/sh
# Prints the path of a usable Python 3.10 (the container image's version: `make
# test-image-env`), or exits 1 when there is none. Tries $PYTHON310, python3.10 on PATH
# (a pyenv shim there may exist and still not run), then pyenv's 3.10.x installs.
# Usable: it runs, is 3.10, can make a venv, and its libpython3.10.so.1.0 (which Triton's
# Python backend stub links) is present.
check='
import ctypes, ensurepip, os, sys, sysconfig, venv
assert sys.version_info[:2] == (3, 10)
lib = "libpython3.10.so.1.0"
if not os.path.exists(os.path.join(sysconfig.get_config_var("LIBDIR") or "", lib)):
    ctypes.CDLL(lib)
print(os.path.realpath(sys.executable))
'
for candidate in "${PYTHON310:-}" "$(command -v python3.10 || true)" \
    $(ls -d "${PYENV_ROOT:-$HOME/.pyenv}"/versions/3.10*/bin/python3.10 2>/dev/null | sort -rV); do
  [ -n "$candidate" ] || continue
  if "$candidate" -c "$check" 2>/dev/null; then
    exit 0
  fi
done
exit 1
